// Package ctlha runs a site's controllers as a 1+1 pair: one active
// (PostgreSQL primary, the API on the floating address), one standby
// (PostgreSQL hot standby, synchronous), with no split brain.
//
// Decide is the pair's arbitration table (docs/ha.md) as a pure function:
// given what one controller knows at one instant (View: its role, epoch
// and LSN, the peer's heartbeats per network, the central witness or
// etcd, the peer's BMC), it says what to do (Decision: stay, hold, take
// over, fence, go asynchronous or synchronous, step down, follow, wait),
// naming the table row and the alarm. It never acts on heartbeat loss
// alone: a second channel (the witness, etcd's quorum, or the peer's BMC
// read back off) confirms before any takeover or fence.
//
// Heartbeat sends and tracks the authenticated UDP heartbeats between the
// two controllers on each site network. The runner, which carries the
// decisions out, lives beside them.
package ctlha
