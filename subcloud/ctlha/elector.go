package ctlha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-edge/petrel/internal/coord"
)

// EtcdElector is the controllers' election in a multi-server site's etcd
// (three members: both controllers and a worker). Both controllers stand
// as candidates all the time (the standby queued behind the active), so
// each sees the other's lease; the leader is the active controller and
// its term's revision the pair's epoch.
type EtcdElector struct {
	cli    *coord.Client
	lead   *coord.Leadership
	prefix string
	log    *slog.Logger
}

// NewEtcdElector stands as name under /petrel/<site>/controller. The
// session's lease is ttl (whole seconds, at least 1): a controller that
// stops refreshing it (power loss, hang, partition from the quorum) loses
// its candidacy that long after its last refresh.
func NewEtcdElector(cli *coord.Client, site, name string, ttl time.Duration, log *slog.Logger) (*EtcdElector, error) {
	prefix := "/petrel/" + site + "/controller"
	l, err := coord.NewLeadership(coord.LeadershipConfig{Client: cli, Prefix: prefix, Name: name, SessionTTL: ttl,
		RetryDelay: 200 * time.Millisecond, Logger: log})
	if err != nil {
		return nil, err
	}
	return &EtcdElector{cli: cli, lead: l, prefix: prefix, log: log}, nil
}

// Run keeps this controller's candidacy up until ctx ends: after a term
// ends (resigned at a swact, lost) it queues again.
func (e *EtcdElector) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if _, err := e.lead.Campaign(ctx); err != nil {
			if ctx.Err() != nil || errors.Is(err, coord.ErrClosed) {
				return nil
			}
			e.log.Warn("campaign", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		select {
		case <-ctx.Done():
		case <-e.lead.Lost():
		}
	}
	return nil
}

// Campaign waits until this controller leads (its queued candidacy wins)
// and returns the term's epoch.
func (e *EtcdElector) Campaign(ctx context.Context) (uint64, error) {
	for {
		if g, ok := e.lead.Guard(); ok {
			return uint64(g.Rev), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("not elected: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Resign ends this controller's term at once; its candidacy queues again.
func (e *EtcdElector) Resign(ctx context.Context) error { return e.lead.Resign(ctx) }

// Lost is closed when the term in progress ends.
func (e *EtcdElector) Lost() <-chan struct{} { return e.lead.Lost() }

// epochKey records the last epoch a controller took over at, and who.
func (e *EtcdElector) epochKey() string { return e.prefix + "-epoch" }

// View reads the election: quorum, the leader (the oldest candidacy),
// the peer's lease, and the epoch last recorded at a takeover and by whom.
func (e *EtcdElector) View(ctx context.Context, peer string) EtcdView {
	var v EtcdView
	resp, err := e.cli.Etcd().Get(ctx, e.prefix+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return v
	}
	v.Quorum = true
	for i, kv := range resp.Kvs {
		if i == 0 {
			v.Leader = string(kv.Value)
		}
		if string(kv.Value) == peer {
			v.PeerLease = true
		}
	}
	rec, err := e.cli.Etcd().Get(ctx, e.epochKey())
	if err == nil && len(rec.Kvs) > 0 {
		epoch, holder, _ := strings.Cut(string(rec.Kvs[0].Value), " ")
		if n, err := strconv.ParseUint(epoch, 10, 64); err == nil {
			v.LeaderEpoch, v.EpochHolder = n, holder
		}
	}
	return v
}

// Record writes the epoch this controller took over at, under its term.
func (e *EtcdElector) Record(ctx context.Context, epoch uint64, holder string) error {
	g, ok := e.lead.Guard()
	if !ok {
		return coord.ErrNotLeader
	}
	_, err := e.cli.PutIfLeader(ctx, g, clientv3.OpPut(e.epochKey(), strconv.FormatUint(epoch, 10)+" "+holder))
	return err
}

// Evict revokes the leases of name's candidacies: its host is confirmed
// off, so the election need not wait out its lease.
func (e *EtcdElector) Evict(ctx context.Context, name string) error {
	resp, err := e.cli.Etcd().Get(ctx, e.prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	var errs []error
	for _, kv := range resp.Kvs {
		if string(kv.Value) != name || kv.Lease == 0 {
			continue
		}
		if _, err := e.cli.Etcd().Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
			errs = append(errs, fmt.Errorf("revoke %x: %w", kv.Lease, err))
		}
	}
	return errors.Join(errs...)
}

// Close ends the candidacy.
func (e *EtcdElector) Close() error { return e.lead.Close() }
