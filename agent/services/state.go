package services

import (
	"fmt"
	"slices"

	"github.com/petrel-edge/petrel/servicemgr"
)

// state is where a member is on this host. Every state but gone is
// reported (servicemgr.MemberState); gone is where a removed member ends,
// and then it is no longer listed.
type state string

const (
	starting state = "starting" // its process runs; no health check has passed yet
	standby  state = "standby"  // running and healthy, not serving
	active   state = "active"   // activated: serves, holds its floating address
	failed   state = "failed"   // stopped after a failure; restarts after a backoff
	stopping state = "stopping" // removed from this host: being deactivated and stopped
	gone     state = "gone"     // stopped for good; the member's goroutine has ended
)

// memberNext is the member state machine (docs/servicemgr.md has its
// diagram).
var memberNext = map[state][]state{
	starting: {standby, failed, stopping, starting}, // starting again: a new start action or health check
	standby:  {active, failed, stopping, starting},
	active:   {standby, failed, stopping},
	failed:   {starting, stopping},
	stopping: {gone},
	gone:     nil,
}

// valid reports whether s is a known state.
func (s state) valid() bool { _, ok := memberNext[s]; return ok }

// canTo reports whether a member may move from s to next.
func (s state) canTo(next state) bool { return slices.Contains(memberNext[s], next) }

// wire is s as the site knows it.
func (s state) wire() servicemgr.MemberState {
	switch s {
	case starting:
		return servicemgr.MemberStarting
	case standby:
		return servicemgr.MemberStandby
	case active:
		return servicemgr.MemberActive
	case failed:
		return servicemgr.MemberFailed
	case stopping, gone:
		return servicemgr.MemberStopping
	default:
		panic(fmt.Sprintf("services: unknown member state %q", string(s)))
	}
}
