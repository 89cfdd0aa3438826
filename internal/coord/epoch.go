package coord

import (
	"context"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TxnIfLeader applies ops in one transaction that holds only while g's
// term lasts and every compare in cmps holds. It returns the revision the
// transaction committed at. It fails with ErrNotLeader when g no longer
// matches (whatever cmps say) and with ErrConflict when g matches but a
// compare of cmps fails; in both cases nothing was written.
func (c *Client) TxnIfLeader(ctx context.Context, g Guard, cmps []clientv3.Cmp, ops ...clientv3.Op) (int64, error) {
	if g.IsZero() {
		return 0, ErrNotLeader
	}
	then := ops
	if len(cmps) > 0 {
		// A nested transaction tells the two failures apart: the outer
		// compare is the guard, the inner ones are the caller's.
		then = []clientv3.Op{clientv3.OpTxn(cmps, ops, nil)}
	}
	resp, err := c.etcd.Txn(ctx).If(g.Cmp()).Then(then...).Commit()
	if err != nil {
		return 0, fmt.Errorf("coord: guarded transaction: %w", err)
	}
	if !resp.Succeeded {
		return 0, ErrNotLeader
	}
	if len(cmps) > 0 && !resp.Responses[0].GetResponseTxn().GetSucceeded() {
		return 0, ErrConflict
	}
	return resp.Header.Revision, nil
}

// PutIfLeader applies ops (puts, deletes) while g's term lasts; see
// TxnIfLeader.
func (c *Client) PutIfLeader(ctx context.Context, g Guard, ops ...clientv3.Op) (int64, error) {
	return c.TxnIfLeader(ctx, g, nil, ops...)
}

// Epoch reads the epoch kept at key and the revision that last changed it;
// an absent key is epoch 0 at revision 0.
func (c *Client) Epoch(ctx context.Context, key string) (epoch uint64, modRev int64, err error) {
	resp, err := c.etcd.Get(ctx, key)
	if err != nil {
		return 0, 0, fmt.Errorf("coord: read epoch %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, 0, nil
	}
	return parseEpoch(resp.Kvs[0])
}

func parseEpoch(kv *mvccpb.KeyValue) (uint64, int64, error) {
	e, err := strconv.ParseUint(string(kv.Value), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("coord: epoch %s = %q: %w", kv.Key, kv.Value, ErrBadEpoch)
	}
	return e, kv.ModRevision, nil
}

// EpochIs is the compare that holds while the epoch at key is still e (an
// absent key is epoch 0). Pass it to TxnIfLeader to write only if nobody
// has bumped the epoch since it was read.
func EpochIs(key string, e uint64) clientv3.Cmp {
	if e == 0 {
		return clientv3.Compare(clientv3.Version(key), "=", 0)
	}
	return clientv3.Compare(clientv3.Value(key), "=", strconv.FormatUint(e, 10))
}

// Bump increments the epoch at key (absent: 0) and returns the new value.
// The write is one transaction that also checks g, so a deposed leader's
// Bump fails with ErrNotLeader; concurrent Bumps of one leader each get
// their own value (a transaction that lost a race is retried with the
// value it lost to).
func (c *Client) Bump(ctx context.Context, g Guard, key string) (uint64, error) {
	if g.IsZero() {
		return 0, ErrNotLeader
	}
	cur, modRev, err := c.Epoch(ctx, key)
	if err != nil {
		return 0, err
	}
	for {
		next := cur + 1
		resp, err := c.etcd.Txn(ctx).
			If(g.Cmp(), clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
			Then(clientv3.OpPut(key, strconv.FormatUint(next, 10))).
			Else(clientv3.OpGet(g.Key), clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("coord: bump epoch %s: %w", key, err)
		}
		if resp.Succeeded {
			return next, nil
		}
		guard := resp.Responses[0].GetResponseRange().GetKvs()
		if len(guard) == 0 || guard[0].CreateRevision != g.Rev {
			return 0, ErrNotLeader
		}
		if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			if cur, modRev, err = parseEpoch(kvs[0]); err != nil {
				return 0, err
			}
		} else {
			cur, modRev = 0, 0
		}
	}
}
