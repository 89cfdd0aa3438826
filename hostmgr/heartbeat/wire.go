// Package heartbeat is the site controller's pulse to every host on each
// network, and the host agent's answer: UDP datagrams, authenticated with a
// key per host, numbered so that a late or replayed answer never counts.
// The monitor counts consecutive missed pulses per host and network and
// reports a change of state — ok, degraded (5 misses), lost (10) with the
// brief's defaults of a 100 ms period — to host management, which decides
// what to do (never on heartbeat loss alone).
package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"

	"github.com/google/uuid"
)

// Network is one of a site's networks a host is pulsed on.
type Network uint8

const (
	Mgmt Network = iota + 1
	Cluster
)

func (n Network) String() string {
	switch n {
	case Mgmt:
		return "mgmt"
	case Cluster:
		return "cluster"
	}
	return "unknown"
}

// Datagram kinds.
const (
	kindPulse = 1 // controller -> host
	kindReply = 2 // host -> controller
)

// frame layout: magic(4) kind(1) network(1) seq(8) host(16) mac(16).
const (
	magic     = "PHB1"
	macLen    = 16
	bodyLen   = 4 + 1 + 1 + 8 + 16
	frameLen  = bodyLen + macLen
	keyLength = 32
)

// frame is one datagram.
type frame struct {
	kind    byte
	network Network
	seq     uint64
	host    uuid.UUID
}

// ErrBadFrame reports a datagram that is malformed or not authentic.
var ErrBadFrame = errors.New("heartbeat: bad frame")

func (f frame) seal(key []byte) []byte {
	b := make([]byte, bodyLen, frameLen)
	copy(b, magic)
	b[4], b[5] = f.kind, byte(f.network)
	binary.BigEndian.PutUint64(b[6:], f.seq)
	copy(b[14:], f.host[:])
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(b)[:frameLen]
}

// open parses a datagram; keyOf returns the key of the host it names (nil:
// unknown host).
func open(b []byte, keyOf func(uuid.UUID) []byte) (frame, error) {
	if len(b) != frameLen || string(b[:4]) != magic {
		return frame{}, ErrBadFrame
	}
	f := frame{kind: b[4], network: Network(b[5]), seq: binary.BigEndian.Uint64(b[6:])}
	copy(f.host[:], b[14:30])
	key := keyOf(f.host)
	if key == nil {
		return frame{}, ErrBadFrame
	}
	m := hmac.New(sha256.New, key)
	m.Write(b[:bodyLen])
	if !hmac.Equal(m.Sum(nil)[:macLen], b[bodyLen:]) {
		return frame{}, ErrBadFrame
	}
	return f, nil
}
