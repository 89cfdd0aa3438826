// Package etcdledger records service group placements in etcd
// (servicemgr.Ledger). Every commit is one transaction, guarded by the
// controller's leadership and by the group's epoch; each active slot is a
// key attached to its host's lease, so a slot can only change hands when
// the holder's lease is revoked (its host confirmed down) or the holder
// is demoted in that same transaction.
//
// Keys under Prefix (such as /petrel/<site>/services/):
//
//	groups/<group>/epoch       the group's epoch (decimal)
//	groups/<group>/placement   the placement, JSON (servicemgr.Placement)
//	groups/<group>/slots/<i>   host name, attached to the host's lease
//	hosts/<host>/lease         the host's lease ID (hex), for a new leader to adopt
package etcdledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/servicemgr"
)

// callTimeout bounds each ledger call: a reconcile that cannot reach etcd
// fails, and is tried again at the next one.
const callTimeout = 5 * time.Second

// Config configures a Ledger.
type Config struct {
	Client *coord.Client
	// Guard returns the current leadership term; false when not leading.
	Guard  func() (coord.Guard, bool)
	Prefix string // ends with "/"
	// LeaseTTL of a host's lease (kept alive while this controller leads);
	// default 10 s.
	LeaseTTL time.Duration
	Logger   *slog.Logger
}

// Ledger implements servicemgr.Ledger on etcd.
type Ledger struct {
	cfg    Config
	mu     sync.Mutex
	leases map[string]hostLease // by host
}

type hostLease struct {
	id clientv3.LeaseID
	ka *coord.KeepAlive
}

var _ servicemgr.Ledger = (*Ledger)(nil)

// New returns a ledger; Close stops its keep-alives.
func New(cfg Config) (*Ledger, error) {
	if cfg.Client == nil || cfg.Guard == nil || cfg.Logger == nil || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, errors.New("etcdledger: Client, Guard, Logger and a Prefix ending in / are required")
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	return &Ledger{cfg: cfg, leases: map[string]hostLease{}}, nil
}

func (l *Ledger) groupKey(g, rest string) string { return l.cfg.Prefix + "groups/" + g + "/" + rest }
func (l *Ledger) leaseKey(h string) string       { return l.cfg.Prefix + "hosts/" + h + "/lease" }

// Load reads a group's placement (epoch 0 and no members if none).
func (l *Ledger) Load(ctx context.Context, group string) (servicemgr.Placement, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := l.cfg.Client.Etcd().Get(ctx, l.groupKey(group, "placement"))
	if err != nil {
		return servicemgr.Placement{}, fmt.Errorf("etcdledger: load %s: %w", group, err)
	}
	p := servicemgr.Placement{Members: map[string]servicemgr.Assigned{}}
	if len(resp.Kvs) > 0 {
		if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
			return servicemgr.Placement{}, fmt.Errorf("etcdledger: placement of %s: %w", group, err)
		}
	}
	e, _, err := l.cfg.Client.Epoch(ctx, l.groupKey(group, "epoch"))
	if err != nil {
		return servicemgr.Placement{}, err
	}
	p.Epoch = e
	return p, nil
}

// lease returns host's lease, granting one (and keeping it alive) the
// first time, or adopting the one a previous leader recorded.
func (l *Ledger) lease(ctx context.Context, g coord.Guard, host string) (clientv3.LeaseID, error) {
	l.mu.Lock()
	hl, ok := l.leases[host]
	l.mu.Unlock()
	if ok {
		select {
		case <-hl.ka.Done(): // expired or revoked: take a new one
		default:
			return hl.id, nil
		}
	}
	c := l.cfg.Client
	var id clientv3.LeaseID
	if resp, err := c.Etcd().Get(ctx, l.leaseKey(host)); err == nil && len(resp.Kvs) > 0 {
		if n, err := strconv.ParseInt(string(resp.Kvs[0].Value), 16, 64); err == nil {
			if ttl, err := c.Etcd().TimeToLive(ctx, clientv3.LeaseID(n)); err == nil && ttl.TTL > 0 {
				id = clientv3.LeaseID(n) // still alive: adopt it
			}
		}
	}
	if id == clientv3.NoLease {
		var err error
		if id, err = c.Grant(ctx, l.cfg.LeaseTTL); err != nil {
			return 0, err
		}
		if _, err := c.PutIfLeader(ctx, g, clientv3.OpPut(l.leaseKey(host), strconv.FormatInt(int64(id), 16))); err != nil {
			_ = c.Revoke(ctx, id)
			return 0, err
		}
	}
	// Keep-alives outlive the call: they run until Release or Close.
	ka, err := c.KeepAlive(context.WithoutCancel(ctx), id)
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	if old, ok := l.leases[host]; ok {
		old.ka.Stop()
	}
	l.leases[host] = hostLease{id: id, ka: ka}
	l.mu.Unlock()
	return id, nil
}

// Commit records next with epoch prevEpoch+1 in one transaction; see the
// package comment.
func (l *Ledger) Commit(ctx context.Context, group string, prevEpoch uint64, next servicemgr.Placement) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	g, ok := l.cfg.Guard()
	if !ok {
		return 0, coord.ErrNotLeader
	}
	c := l.cfg.Client
	epochKey := l.groupKey(group, "epoch")
	cur, _, err := c.Epoch(ctx, epochKey)
	if err != nil {
		return 0, err
	}
	if cur != prevEpoch {
		return 0, fmt.Errorf("%w: %s is at %d, not %d", servicemgr.ErrStale, group, cur, prevEpoch)
	}
	slotsPrefix := l.groupKey(group, "slots/")
	resp, err := c.Etcd().Get(ctx, slotsPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcdledger: slots of %s: %w", group, err)
	}
	cmps := []clientv3.Cmp{coord.EpochIs(epochKey, prevEpoch)}
	var ops []clientv3.Op
	deletes := map[string]bool{}
	held := map[int]string{}
	for _, kv := range resp.Kvs {
		slot, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), slotsPrefix))
		if err != nil {
			continue
		}
		holder := string(kv.Value)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
		if m, ok := next.Members[holder]; ok && m.Role == servicemgr.RoleActive && m.Slot == slot {
			held[slot] = holder // keeps it
			continue
		}
		// The holder gives the slot up only by being demoted (standby) or
		// removed from the group in this commit.
		nm, stays := next.Members[holder]
		demoted := stays && nm.Role == servicemgr.RoleStandby
		if !stays {
			if prev, err := l.Load(ctx, group); err == nil {
				if _, was := prev.Members[holder]; was {
					demoted = true // removed from the group in this commit
				}
			}
		}
		if !demoted {
			return 0, fmt.Errorf("%w: slot %d of %s is %s's", servicemgr.ErrSlotHeld, slot, group, holder)
		}
		deletes[string(kv.Key)] = true
	}
	for host, m := range next.Members {
		if m.Role != servicemgr.RoleActive {
			continue
		}
		if h, ok := held[m.Slot]; ok && h == host {
			continue
		}
		id, err := l.lease(ctx, g, host)
		if err != nil {
			return 0, err
		}
		key := slotsPrefix + strconv.Itoa(m.Slot)
		if !deletes[key] {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		}
		delete(deletes, key) // one op per key in a transaction: the put replaces it
		ops = append(ops, clientv3.OpPut(key, host, clientv3.WithLease(id)))
	}
	for key := range deletes {
		ops = append(ops, clientv3.OpDelete(key))
	}
	epoch := prevEpoch + 1
	next.Epoch = epoch
	b, err := json.Marshal(next)
	if err != nil {
		return 0, err
	}
	ops = append(ops, clientv3.OpPut(epochKey, strconv.FormatUint(epoch, 10)), clientv3.OpPut(l.groupKey(group, "placement"), string(b)))
	if _, err := c.TxnIfLeader(ctx, g, cmps, ops...); err != nil {
		if errors.Is(err, coord.ErrConflict) {
			return 0, fmt.Errorf("%w: %s changed during the commit (%v)", servicemgr.ErrStale, group, err)
		}
		return 0, err
	}
	return epoch, nil
}

// Remove deletes a group's records.
func (l *Ledger) Remove(ctx context.Context, group string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	g, ok := l.cfg.Guard()
	if !ok {
		return coord.ErrNotLeader
	}
	_, err := l.cfg.Client.PutIfLeader(ctx, g, clientv3.OpDelete(l.cfg.Prefix+"groups/"+group+"/", clientv3.WithPrefix()))
	return err
}

// Release revokes a host's lease at once: the slots it held are free.
func (l *Ledger) Release(ctx context.Context, host string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	l.mu.Lock()
	hl, ok := l.leases[host]
	delete(l.leases, host)
	l.mu.Unlock()
	c := l.cfg.Client
	if ok {
		hl.ka.Stop()
		return c.Revoke(ctx, hl.id)
	}
	// A lease a previous leader granted.
	resp, err := c.Etcd().Get(ctx, l.leaseKey(host))
	if err != nil || len(resp.Kvs) == 0 {
		return err
	}
	n, err := strconv.ParseInt(string(resp.Kvs[0].Value), 16, 64)
	if err != nil {
		return nil
	}
	return c.Revoke(ctx, clientv3.LeaseID(n))
}

// Close stops every keep-alive (the leases expire unless a new leader
// adopts them).
func (l *Ledger) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for h, hl := range l.leases {
		hl.ka.Stop()
		delete(l.leases, h)
	}
}
