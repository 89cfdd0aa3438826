// Package coord coordinates Petrel's controllers through etcd: it starts
// the etcd member embedded in a site controller (one on a simplex site,
// three on a multi-server one), connects clients over mutual TLS, elects
// one leader among candidates, and gives the leader fenced writes: every
// write a leader makes is a transaction that also checks the leader's
// election key is still its own (a Guard), so a deposed leader's writes
// fail with ErrNotLeader instead of landing.
//
// On top of that it keeps epochs (fencing tokens: decimal counters bumped
// by the leader) and leases (a key held by a host only while its lease
// lives, such as a service group's active slot). docs/coordination.md
// describes the key layout and the timings.
package coord

import (
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	// ErrNotLeader: the guard no longer matches (the election key was
	// deleted or belongs to a newer term), so the caller is not the leader.
	ErrNotLeader = errors.New("coord: not leader")
	// ErrConflict: the caller is still the leader but one of its extra
	// compares failed (the state it checked has changed).
	ErrConflict = errors.New("coord: conflict")
	// ErrNoLeader: nobody holds the election.
	ErrNoLeader = errors.New("coord: no leader")
	// ErrClosed: the value was used after Close.
	ErrClosed = errors.New("coord: closed")
	// ErrBadEpoch: an epoch key holds something other than a decimal.
	ErrBadEpoch = errors.New("coord: bad epoch value")
	// ErrStopped: the member's server stopped before it was ready.
	ErrStopped = errors.New("coord: member stopped")
)

// Guard identifies one term of leadership: the election key and the
// revision that created it. A write made under a guard applies only while
// that key still exists with that create revision.
type Guard struct {
	Key string
	Rev int64
}

// IsZero reports whether g is the zero Guard, which guards nothing: writes
// under it fail with ErrNotLeader.
func (g Guard) IsZero() bool { return g.Key == "" || g.Rev == 0 }

// Cmp is the compare that holds while g's term lasts.
func (g Guard) Cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(g.Key), "=", g.Rev)
}
