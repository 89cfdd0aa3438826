package faultmgr

import "context"

// Record is one entry of a store's event log in commit order. Every event
// a store keeps gets the next sequence number when it commits, so a reader
// that remembers the last number it handled misses nothing and repeats
// nothing: a site ships its log to central this way, and webhooks deliver
// from it.
type Record struct {
	Seq       uint64 `json:"seq"`
	Event     Event  `json:"event"`
	AlarmUUID string `json:"alarm_uuid,omitempty"` // set and clear events: the alarm's UUID
}

// Log is an event log read in commit order.
type Log interface {
	// After returns up to limit records with Seq > after, ascending.
	After(ctx context.Context, after uint64, limit int) ([]Record, error)
	// Watch returns the last committed sequence number and a channel that
	// is closed at the next commit.
	Watch() (uint64, <-chan struct{})
	// Epoch names this log: it changes only when the store is created
	// anew, so a reader holding a position in another epoch starts over.
	Epoch() string
}
