// Package linkproto is the control protocol of the dial-home link between a
// site and central: length-prefixed JSON messages on the first stream of the
// link's yamux session. Relayed HTTP uses other streams of the same session.
// A duplex controller's witness session speaks the same framing with its own
// messages (witness.go).
package linkproto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
)

// Protocol versions. Central accepts Current and Previous, so a fleet can
// be patched site by site; a site offers the versions it speaks.
const (
	Current  = 1
	Previous = 0 // none before 1
)

// Message types.
const (
	TypeHello     = "hello"      // site -> central, first
	TypeWelcome   = "welcome"    // central -> site
	TypeUpdate    = "update"     // site -> central: summary delta or keepalive
	TypeAck       = "ack"        // central -> site
	TypeGoodbye   = "goodbye"    // either side, with a reason, before closing
	TypeEvents    = "events"     // site -> central: the next records of the site's event log
	TypeEventsAck = "events_ack" // central -> site: applied up to EventSeq
	maxFrameBytes = 1 << 20
)

// Message is one control frame. Fields are used per Type.
type Message struct {
	Type      string   `json:"type"`
	Protocols []int    `json:"protocols,omitempty"` // hello: versions the site speaks
	Protocol  int      `json:"protocol,omitempty"`  // welcome: the version chosen
	Site      string   `json:"site,omitempty"`      // hello
	Seq       uint64   `json:"seq,omitempty"`       // update, ack; hello: last sequence the site saw acked; witness requests and their answers
	Summary   *Summary `json:"summary,omitempty"`   // update: nil for a keepalive
	// Epoch names the site's event log (hello); EventSeq is the last record
	// the site has (hello) or how far central holds it (welcome, events_ack).
	Epoch    string            `json:"epoch,omitempty"`
	EventSeq uint64            `json:"event_seq,omitempty"`
	Records  []faultmgr.Record `json:"records,omitempty"` // events: ascending, contiguous
	Reason   string            `json:"reason,omitempty"`  // goodbye
	// The witness protocol (witness.go): the controller a witness session
	// speaks for (witness_hello), and each request's or answer's body.
	Controller string        `json:"controller,omitempty"`
	Renew      *WitnessRenew `json:"renew,omitempty"`
	State      *WitnessState `json:"state,omitempty"`
	Claim      *WitnessClaim `json:"claim,omitempty"`
	Grant      *WitnessGrant `json:"grant,omitempty"`
	SentAt     time.Time     `json:"sent_at"`
}

// Summary is a site's state at a glance, sent when it changes.
type Summary struct {
	Shape        string         `json:"shape"`
	Hosts        int            `json:"hosts"`
	HostsByAvail map[string]int `json:"hosts_by_availability"`
	Alarms       map[string]int `json:"alarms"` // severity -> count
	Version      string         `json:"software_version"`
}

// Write sends one frame: a 4-byte big-endian length, then JSON.
func Write(w io.Writer, m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > maxFrameBytes {
		return fmt.Errorf("%w: %d bytes exceeds %d", ErrFrameTooLarge, len(b), maxFrameBytes)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		return err
	}
	return nil
}

// ErrFrameTooLarge reports a peer sending an oversized frame.
var ErrFrameTooLarge = errors.New("linkproto: frame too large")

// Read receives one frame.
func Read(r io.Reader) (Message, error) {
	var m Message
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return m, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrameBytes {
		return m, ErrFrameTooLarge
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("linkproto: %w", err)
	}
	return m, nil
}

// Choose picks the newest version both sides speak, among what central
// accepts (Current, Previous).
func Choose(offered []int) (int, bool) {
	best, ok := 0, false
	for _, v := range offered {
		if (v == Current || (Previous > 0 && v == Previous)) && (!ok || v > best) {
			best, ok = v, true
		}
	}
	return best, ok
}
