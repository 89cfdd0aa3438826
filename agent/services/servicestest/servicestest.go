// Package servicestest has test doubles for package services: a fake
// address platform that records what it is asked and keeps the addresses
// it holds, with knobs to make its operations fail.
package servicestest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/agent/services"
)

// Op names an address operation.
type Op string

// Address operations.
const (
	OpAdd      Op = "add"
	OpDel      Op = "del"
	OpAnnounce Op = "announce"
)

// Call is one operation asked of Addresses.
type Call struct {
	Op    Op
	Iface string
	Addr  string // the prefix for add and del, the address for announce
	At    time.Time
	Err   error // what it returned
}

// Addresses is a services.AddressPlatform that changes nothing. Its zero
// value is ready to use.
type Addresses struct {
	mu    sync.Mutex
	calls []Call
	held  map[[2]string]bool // iface, prefix
	errs  map[Op]error
}

var _ services.AddressPlatform = (*Addresses)(nil)

func (a *Addresses) record(op Op, iface, addr string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.errs[op]
	a.calls = append(a.calls, Call{Op: op, Iface: iface, Addr: addr, At: time.Now(), Err: err})
	if err != nil {
		return err
	}
	if a.held == nil {
		a.held = map[[2]string]bool{}
	}
	switch op {
	case OpAdd:
		a.held[[2]string{iface, addr}] = true
	case OpDel:
		delete(a.held, [2]string{iface, addr})
	}
	return nil
}

// AddAddress records the call and holds prefix on iface.
func (a *Addresses) AddAddress(_ context.Context, iface, prefix string) error {
	return a.record(OpAdd, iface, prefix)
}

// DelAddress records the call and no longer holds prefix on iface.
func (a *Addresses) DelAddress(_ context.Context, iface, prefix string) error {
	return a.record(OpDel, iface, prefix)
}

// Announce records the call.
func (a *Addresses) Announce(_ context.Context, iface, addr string) error {
	return a.record(OpAnnounce, iface, addr)
}

// SetError makes every later op fail with err (nil: succeed again).
func (a *Addresses) SetError(op Op, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.errs == nil {
		a.errs = map[Op]error{}
	}
	a.errs[op] = err
}

// Calls lists the operations asked so far, oldest first.
func (a *Addresses) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// Holds reports whether prefix is on iface.
func (a *Addresses) Holds(iface, prefix string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held[[2]string{iface, prefix}]
}

// Held counts the addresses held.
func (a *Addresses) Held() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.held)
}
