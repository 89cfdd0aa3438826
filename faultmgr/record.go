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

// SiteOps turns a site's records into the operations that apply them at
// central: sets raise (the alarm's static fields from cat, its severity,
// reason and UUID from the site), clears clear, and every record keeps its
// own event.
func SiteOps(cat *Catalog, recs []Record) []Op {
	ops := make([]Op, len(recs))
	for i, r := range recs {
		ev := r.Event
		a := Alarm{UUID: r.AlarmUUID, AlarmID: ev.AlarmID, EntityInstanceID: ev.EntityInstanceID,
			Severity: Severity(ev.Severity), ReasonText: ev.ReasonText}
		if d, ok := cat.Lookup(ev.AlarmID); ok {
			a.AlarmType, a.ProbableCause, a.ProposedRepairAction = d.AlarmType, d.ProbableCause, d.Repair
			a.ServiceAffecting, a.MgmtAffecting, a.DegradeAffecting = d.ServiceAffecting, d.MgmtAffecting, d.DegradeAffecting
		}
		switch ev.Type {
		case EventSet:
			ops[i] = Op{Kind: OpRaise, Alarm: a, Event: &ev}
		case EventClear:
			ops[i] = Op{Kind: OpClear, Alarm: a, Event: &ev}
		default:
			ops[i] = Op{Kind: OpLog, Event: &ev}
		}
	}
	return ops
}
