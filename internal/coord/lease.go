package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Grant grants a lease of ttl, rounded up to whole seconds (at least one).
// etcd raises a TTL below its minimum (1.5 × the election timeout, rounded
// up to a second) to that minimum.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	resp, err := c.etcd.Grant(ctx, ttlSeconds(ttl))
	if err != nil {
		return clientv3.NoLease, fmt.Errorf("coord: grant lease: %w", err)
	}
	return resp.ID, nil
}

func ttlSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// Revoke revokes lease id, deleting the keys attached to it. A lease that
// has expired or was revoked already is not an error.
func (c *Client) Revoke(ctx context.Context, id clientv3.LeaseID) error {
	if _, err := c.etcd.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("coord: revoke lease %x: %w", int64(id), err)
	}
	return nil
}

// KeepAlive refreshes a lease in the background until Stop, until the ctx
// given to Client.KeepAlive ends, or until the lease is gone.
type KeepAlive struct {
	stop context.CancelFunc
	done chan struct{}
}

// KeepAlive keeps lease id alive (etcd's client refreshes it every third
// of its TTL) until ka.Stop, until ctx ends, or until the lease expires or
// is revoked; ka.Done tells which has happened.
func (c *Client) KeepAlive(ctx context.Context, id clientv3.LeaseID) (*KeepAlive, error) {
	ctx, cancel := context.WithCancel(ctx)
	ch, err := c.etcd.KeepAlive(ctx, id)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("coord: keep lease %x alive: %w", int64(id), err)
	}
	ka := &KeepAlive{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(ka.done)
		defer cancel()
		for range ch { // the responses carry nothing needed here
		}
	}()
	return ka, nil
}

// Done is closed when the keep-alive has ended: stopped, its ctx ended,
// the lease expired or was revoked, or the client was closed.
func (ka *KeepAlive) Done() <-chan struct{} { return ka.done }

// Stop stops refreshing the lease and waits until the refresher has
// exited. The lease lives on until it expires or is revoked. It can be
// called more than once.
func (ka *KeepAlive) Stop() {
	ka.stop()
	<-ka.done
}

// CreateWithLease creates key = val attached to lease, if key does not
// exist and g's term lasts, in one transaction. It models a slot held by a
// host's lease: when that lease is revoked or expires, the key goes and the
// slot can be given to another holder. If key exists, created is false and
// holder is its value. It fails with ErrNotLeader when g no longer matches.
func (c *Client) CreateWithLease(ctx context.Context, g Guard, key, val string, lease clientv3.LeaseID) (created bool, holder string, err error) {
	if g.IsZero() {
		return false, "", ErrNotLeader
	}
	if lease == clientv3.NoLease {
		return false, "", fmt.Errorf("coord: create %s: no lease given", key)
	}
	absent := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	inner := clientv3.OpTxn(
		[]clientv3.Cmp{absent},
		[]clientv3.Op{clientv3.OpPut(key, val, clientv3.WithLease(lease))},
		[]clientv3.Op{clientv3.OpGet(key)},
	)
	resp, err := c.etcd.Txn(ctx).If(g.Cmp()).Then(inner).Commit()
	if err != nil {
		return false, "", fmt.Errorf("coord: create %s: %w", key, err)
	}
	if !resp.Succeeded {
		return false, "", ErrNotLeader
	}
	txn := resp.Responses[0].GetResponseTxn()
	if txn.GetSucceeded() {
		return true, val, nil
	}
	if kvs := txn.GetResponses()[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		holder = string(kvs[0].Value)
	}
	return false, holder, nil
}
