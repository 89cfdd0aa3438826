package faultmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
)

// Alarm is an active alarm. JSON keys are the API contract (brief §8).
type Alarm struct {
	UUID                 string     `json:"uuid"`
	AlarmID              string     `json:"alarm_id"`
	EntityInstanceID     string     `json:"entity_instance_id"`
	Severity             Severity   `json:"severity"`
	ReasonText           string     `json:"reason_text"`
	AlarmType            string     `json:"alarm_type"`
	ProbableCause        string     `json:"probable_cause"`
	ProposedRepairAction string     `json:"proposed_repair_action"`
	ServiceAffecting     bool       `json:"service_affecting"`
	MgmtAffecting        string     `json:"mgmt_affecting"`
	DegradeAffecting     string     `json:"degrade_affecting"`
	Suppressed           bool       `json:"suppressed"`
	AckedBy              string     `json:"acked_by"`
	AckedAt              *time.Time `json:"acked_at"`
	Timestamp            time.Time  `json:"timestamp"`
	Site                 string     `json:"site"`
}

// Summary counts active, unsuppressed alarms per severity.
type Summary struct {
	Critical int `json:"critical"`
	Major    int `json:"major"`
	Minor    int `json:"minor"`
	Warning  int `json:"warning"`
}

// OpKind is what an alarm operation does.
type OpKind int

const (
	OpRaise OpKind = iota + 1
	OpClear
	OpClearPrefix
	OpLog // appends Event: a log entry, or a site's audit event at central
)

// Op is one alarm change, applied with others in one transaction.
type Op struct {
	Kind   OpKind
	Alarm  Alarm  // OpRaise: the alarm as it should be; OpClear: AlarmID and EntityInstanceID
	Prefix string // OpClearPrefix: clears every alarm whose entity starts with it
	// Event, if set, is recorded as it is (UUID, type, time) instead of an
	// event made by the store: a site's events applied at central, which
	// are recorded even when they change nothing there. OpLog requires it.
	Event *Event
}

// OpResult tells what an operation changed.
type OpResult struct {
	Alarm   Alarm // the stored alarm (raise) or the cleared one
	Changed bool  // false: the raise matched what was stored, or nothing to clear
	Cleared int   // OpClearPrefix: how many
}

// Errors of alarm handling.
var (
	ErrAlarmNotFound   = errs.New(errs.NotFound, "alarm not found")
	ErrUnknownAlarm    = errs.New(errs.Invalid, "alarm ID is not in the catalogue")
	ErrNotSuppressible = errs.New(errs.Conflict, "alarm ID cannot be suppressed")
)

// AlarmStore keeps active alarms, suppressions and their events.
// Implementations: faultdb.
type AlarmStore interface {
	// ApplyAlarmOps applies ops in order in one transaction, appending a
	// set or clear event for every change; at is the time of all of them.
	ApplyAlarmOps(ctx context.Context, ops []Op, site string, at time.Time) ([]OpResult, error)
	// Alarms lists active alarms, newest first; filters AlarmFilters.
	Alarms(ctx context.Context, opts page.Options) ([]Alarm, string, error)
	Alarm(ctx context.Context, uuid string) (Alarm, error)
	Ack(ctx context.Context, uuid, user string, at time.Time) (Alarm, error)
	Summary(ctx context.Context) (Summary, error)
	SetSuppressed(ctx context.Context, alarmID string, suppressed bool, user string, at time.Time) error
	Suppressions(ctx context.Context) ([]string, error)
}

// AlarmFilters are the filters Alarms accepts.
// site is exact ("" for central's own alarms).
var AlarmFilters = []string{"severity", "alarm_id", "entity_instance_id", "mgmt_affecting", "suppressed", "site"}

var entityPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]*=[^.=\s]+(\.[a-z][a-z0-9_-]*=[^.=\s]+)*$`)

// ValidateEntity checks an entity instance ID: key=value pairs joined by
// dots, e.g. host=controller-0.process=sm.
func ValidateEntity(field, e string) error {
	if len(e) > 255 || !entityPattern.MatchString(e) {
		return errs.Field(field, "must be key=value pairs joined by '.', e.g. host=controller-0.process=sm")
	}
	return nil
}

// Config configures a Manager.
type Config struct {
	Catalog *Catalog
	Store   AlarmStore
	Site    string // recorded on every alarm and event; "" at central
	Logger  *slog.Logger
	// MaxBatch and MaxDelay bound group commit (ENGINEERING.md: at most
	// 1,000 records or 10 ms per commit). Zero: those.
	MaxBatch int
	MaxDelay time.Duration
}

// Manager raises and clears alarms durably: changes are group-committed,
// and a call returns only after its change is committed.
type Manager struct {
	cfg Config
	in  chan request
}

type request struct {
	op    Op
	reply chan response
}

type response struct {
	res OpResult
	err error
}

// NewManager returns a Manager; Run must be running for Raise and Clear.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Catalog == nil || cfg.Store == nil || cfg.Logger == nil {
		return nil, errors.New("faultmgr: Catalog, Store and Logger are required")
	}
	if cfg.MaxBatch <= 0 || cfg.MaxBatch > 1000 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxDelay <= 0 || cfg.MaxDelay > 10*time.Millisecond {
		cfg.MaxDelay = 10 * time.Millisecond
	}
	return &Manager{cfg: cfg, in: make(chan request, 4*cfg.MaxBatch)}, nil
}

// Catalog is the manager's catalogue.
func (m *Manager) Catalog() *Catalog { return m.cfg.Catalog }

// Store is the manager's store, for reads.
func (m *Manager) Store() AlarmStore { return m.cfg.Store }

// Raise sets alarm id on entity, its reason filled from fields. Raising an
// alarm that is active with the same severity and reason changes nothing.
func (m *Manager) Raise(ctx context.Context, id, entity string, fields map[string]string) (Alarm, bool, error) {
	d, ok := m.cfg.Catalog.Lookup(id)
	if !ok {
		return Alarm{}, false, fmt.Errorf("%w: %s", ErrUnknownAlarm, id)
	}
	if err := ValidateEntity("entity_instance_id", entity); err != nil {
		return Alarm{}, false, err
	}
	a := Alarm{AlarmID: id, EntityInstanceID: entity, Severity: d.Severity, ReasonText: fill(d.Reason, entity, fields),
		AlarmType: d.AlarmType, ProbableCause: d.ProbableCause, ProposedRepairAction: d.Repair,
		ServiceAffecting: d.ServiceAffecting, MgmtAffecting: d.MgmtAffecting, DegradeAffecting: d.DegradeAffecting,
		Site: m.cfg.Site}
	r, err := m.submit(ctx, Op{Kind: OpRaise, Alarm: a})
	return r.Alarm, r.Changed, err
}

// Clear clears alarm id on entity; clearing an absent alarm is a no-op.
func (m *Manager) Clear(ctx context.Context, id, entity string) (bool, error) {
	if _, ok := m.cfg.Catalog.Lookup(id); !ok {
		return false, fmt.Errorf("%w: %s", ErrUnknownAlarm, id)
	}
	if err := ValidateEntity("entity_instance_id", entity); err != nil {
		return false, err
	}
	r, err := m.submit(ctx, Op{Kind: OpClear, Alarm: Alarm{AlarmID: id, EntityInstanceID: entity}})
	return r.Changed, err
}

// ClearEntity clears every alarm of an entity and its sub-entities
// (host=worker-1 and host=worker-1.process=sm, not host=worker-10) and
// returns how many.
func (m *Manager) ClearEntity(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, errs.Field("entity_instance_id", "is required")
	}
	r, err := m.submit(ctx, Op{Kind: OpClearPrefix, Prefix: prefix})
	return r.Cleared, err
}

// ClearUUID clears the active alarm with the given UUID.
func (m *Manager) ClearUUID(ctx context.Context, id string) (Alarm, error) {
	a, err := m.cfg.Store.Alarm(ctx, id)
	if err != nil {
		return Alarm{}, err
	}
	r, err := m.submit(ctx, Op{Kind: OpClear, Alarm: Alarm{AlarmID: a.AlarmID, EntityInstanceID: a.EntityInstanceID}})
	if err == nil && !r.Changed {
		return Alarm{}, fmt.Errorf("%w: %s", ErrAlarmNotFound, id)
	}
	return a, err
}

// Suppress hides alarm id from summaries (it stays listed, marked).
func (m *Manager) Suppress(ctx context.Context, id string, on bool, user string) error {
	d, ok := m.cfg.Catalog.Lookup(id)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownAlarm, id)
	}
	if on && !d.Suppressible {
		return fmt.Errorf("%w: %s", ErrNotSuppressible, id)
	}
	return m.cfg.Store.SetSuppressed(ctx, id, on, user, time.Now().UTC())
}

func (m *Manager) submit(ctx context.Context, op Op) (OpResult, error) {
	req := request{op: op, reply: make(chan response, 1)}
	select {
	case m.in <- req:
	case <-ctx.Done():
		return OpResult{}, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.res, r.err
	case <-ctx.Done():
		// The change may still commit; the caller learns nothing more.
		return OpResult{}, ctx.Err()
	}
}

// Run group-commits submitted changes until ctx ends: a batch closes at
// MaxBatch changes or MaxDelay after its first, whichever comes first.
func (m *Manager) Run(ctx context.Context) error {
	for {
		var batch []request
		select {
		case <-ctx.Done():
			return nil
		case r := <-m.in:
			batch = append(batch, r)
		}
		timer := time.NewTimer(m.cfg.MaxDelay)
	fill:
		for len(batch) < m.cfg.MaxBatch {
			select {
			case r := <-m.in:
				batch = append(batch, r)
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		ops := make([]Op, len(batch))
		now := time.Now().UTC()
		for i, r := range batch {
			ops[i] = r.op
			if ops[i].Kind == OpRaise && ops[i].Alarm.UUID == "" {
				id, _ := uuid.NewV7()
				ops[i].Alarm.UUID = id.String()
			}
		}
		res, err := m.cfg.Store.ApplyAlarmOps(context.WithoutCancel(ctx), ops, m.cfg.Site, now)
		if err != nil {
			m.cfg.Logger.Error("alarm batch not committed", "changes", len(batch), "err", err)
		}
		for i, r := range batch {
			if err != nil {
				r.reply <- response{err: err}
			} else {
				r.reply <- response{res: res[i]}
			}
		}
	}
}

var placeholder = regexp.MustCompile(`\{([a-z_]+)\}`)

// fill replaces {name} in a reason with fields[name], or with the value of
// that key in the entity instance ID (host=worker-1 fills {host}).
func fill(reason, entity string, fields map[string]string) string {
	ent := map[string]string{}
	for _, kv := range strings.Split(entity, ".") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			ent[k] = v
		}
	}
	return placeholder.ReplaceAllStringFunc(reason, func(m string) string {
		k := m[1 : len(m)-1]
		if v, ok := fields[k]; ok {
			return v
		}
		if v, ok := ent[k]; ok {
			return v
		}
		return m
	})
}
