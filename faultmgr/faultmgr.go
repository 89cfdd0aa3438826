// Package faultmgr is Petrel's fault management: alarms and the event
// history. So far it holds the event log, where every mutating API call is
// recorded as an audit event; the alarm catalogue, alarms, suppression and
// propagation build on it.
package faultmgr

import (
	"context"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// EventType is the kind of an event in the history log.
type EventType string

const (
	EventSet   EventType = "set"   // an alarm was raised
	EventClear EventType = "clear" // an alarm was cleared
	EventLog   EventType = "log"   // a log entry: an event without an alarm
	EventAudit EventType = "audit" // a mutating API call
)

// Valid reports whether t is a known event type.
func (t EventType) Valid() bool {
	switch t {
	case EventSet, EventClear, EventLog, EventAudit:
		return true
	}
	return false
}

// Event is one entry of the history log. Audit events fill User, Role,
// Action, Target and Result; alarm events fill AlarmID, EntityInstanceID and
// Severity.
type Event struct {
	UUID             string    `json:"uuid"`
	Type             EventType `json:"type"`
	AlarmID          string    `json:"alarm_id"`
	EntityInstanceID string    `json:"entity_instance_id"`
	Severity         string    `json:"severity"`
	ReasonText       string    `json:"reason_text"`
	User             string    `json:"user"`
	Role             string    `json:"role"`
	Action           string    `json:"action"`
	Target           string    `json:"target"`
	Result           string    `json:"result"`
	RequestID        string    `json:"request_id"`
	Timestamp        time.Time `json:"timestamp"`
	Site             string    `json:"site"`
}

// EventStore keeps the history log. Implementations: faultdb (gorm).
type EventStore interface {
	AppendEvent(ctx context.Context, e Event) error
	// Events lists events newest first, filtered by the list options'
	// filters (EventFilters).
	Events(ctx context.Context, opts rest.ListOptions) ([]Event, string, error)
	Event(ctx context.Context, uuid string) (Event, error)
}

// EventFilters are the filters Events accepts: exact type, alarm_id,
// user; entity_instance_id as a prefix; since and until as RFC 3339 times
// (since inclusive, until exclusive).
var EventFilters = []string{"type", "alarm_id", "entity_instance_id", "user", "since", "until"}

// ErrEventNotFound reports an unknown event.
var ErrEventNotFound = errs.New(errs.NotFound, "event not found")
