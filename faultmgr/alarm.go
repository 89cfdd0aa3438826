package faultmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

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
	Limits   Limits
	// Registerer gets the manager's metrics; nil: none.
	Registerer prometheus.Registerer
}

// Limits is storm control: a burst collapses into a bounded active set.
type Limits struct {
	// MaxActive bounds this daemon's own active alarms, MaxActivePerID those
	// of one alarm ID. A raise beyond either is counted, not stored, and
	// 100.150 is raised for the ID ("all" for the total) until the count
	// drops below 90% of the limit. Zero: 20,000 and 2,000.
	MaxActive      int `json:"max_active"`
	MaxActivePerID int `json:"max_active_per_id"`
	// LogRate and LogBurst bound log entries per alarm ID (a token bucket,
	// per second). Zero: 100 and 1,000.
	LogRate  float64 `json:"log_rate"`
	LogBurst int     `json:"log_burst"`
}

func (l *Limits) defaults() {
	if l.MaxActive <= 0 {
		l.MaxActive = 20_000
	}
	if l.MaxActivePerID <= 0 {
		l.MaxActivePerID = 2_000
	}
	if l.LogRate <= 0 {
		l.LogRate = 100
	}
	if l.LogBurst <= 0 {
		l.LogBurst = 1_000
	}
}

// Manager raises and clears alarms durably: changes are group-committed,
// and a call returns only after its change is committed.
//
// It is the only writer of its daemon's own alarms, so it keeps them in
// memory too: a raise that changes nothing and a clear of an absent alarm
// answer from memory without a transaction, and storm control counts
// active alarms without a query.
type Manager struct {
	cfg Config
	in  chan request

	loaded     chan struct{} // closed once the active set is read
	mu         sync.Mutex
	active     map[key]Alarm  // committed, this daemon's own
	perID      map[string]int // active per alarm ID
	inflight   map[key]int    // raises of keys not yet active, submitted
	inflightID map[string]int
	logs       map[string]*bucket

	deduped   prometheus.Counter
	collapsed *prometheus.CounterVec
	dropped   *prometheus.CounterVec
}

type key struct{ id, entity string }

// StormAlarm is raised when an alarm ID reaches its active limit.
const StormAlarm = "100.150"

// Errors of storm control: the raise or log entry was counted, not stored.
var (
	ErrStorm    = errs.New(errs.RateLimited, "alarm storm: the active limit is reached; the raise was counted, not stored")
	ErrLogStorm = errs.New(errs.RateLimited, "log storm: the rate limit is reached; the entry was counted, not stored")
	ErrNotAlarm = errs.New(errs.Invalid, "the catalogue entry is a log entry, not an alarm")
	ErrNotLog   = errs.New(errs.Invalid, "the catalogue entry is an alarm, not a log entry")
)

type request struct {
	op       Op
	reserved bool // a raise counted in inflight
	reply    chan response
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
	cfg.Limits.defaults()
	m := &Manager{cfg: cfg, in: make(chan request, 4*cfg.MaxBatch), loaded: make(chan struct{}),
		active: map[key]Alarm{}, perID: map[string]int{}, inflight: map[key]int{}, inflightID: map[string]int{},
		logs: map[string]*bucket{},
		deduped: prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_alarm_raises_deduplicated_total",
			Help: "Raises of an active alarm that changed nothing, answered from memory."}),
		collapsed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_alarm_raises_collapsed_total",
			Help: "Raises beyond the active limits: counted, not stored (storm control)."}, []string{"alarm_id"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_log_events_dropped_total",
			Help: "Log entries beyond the rate limit: counted, not stored (storm control)."}, []string{"alarm_id"}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{m.deduped, m.collapsed, m.dropped} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// load reads this daemon's active alarms into memory.
func (m *Manager) load(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Read afresh: a retried or repeated load must not count twice.
	clear(m.active)
	clear(m.perID)
	for after := ""; ; {
		as, next, err := m.cfg.Store.Alarms(ctx, page.Options{Limit: 1000, After: after, Filters: map[string]string{"site": m.cfg.Site}})
		if err != nil {
			return err
		}
		for _, a := range as {
			m.active[key{a.AlarmID, a.EntityInstanceID}] = a
			m.perID[a.AlarmID]++
		}
		if next == "" {
			return nil
		}
		after = next
	}
}

func (m *Manager) waitLoaded(ctx context.Context) error {
	select {
	case <-m.loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stormEntity names the alarm ID a storm alarm is about: alarm-id=100-101.
func stormEntity(id string) string { return "alarm-id=" + strings.ReplaceAll(id, ".", "-") }

func stormTarget(entity string) string {
	return strings.ReplaceAll(strings.TrimPrefix(entity, "alarm-id="), "-", ".")
}

// Catalog is the manager's catalogue.
func (m *Manager) Catalog() *Catalog { return m.cfg.Catalog }

// Store is the manager's store, for reads.
func (m *Manager) Store() AlarmStore { return m.cfg.Store }

// Raise sets alarm id on entity, its reason filled from fields. Raising an
// alarm that is active with the same severity and reason changes nothing.
// Beyond the active limits it fails with ErrStorm (and raises 100.150).
func (m *Manager) Raise(ctx context.Context, id, entity string, fields map[string]string) (Alarm, bool, error) {
	d, ok := m.cfg.Catalog.Lookup(id)
	if !ok {
		return Alarm{}, false, fmt.Errorf("%w: %s", ErrUnknownAlarm, id)
	}
	if d.Log {
		return Alarm{}, false, fmt.Errorf("%w: %s (use Log)", ErrNotAlarm, id)
	}
	if err := ValidateEntity("entity_instance_id", entity); err != nil {
		return Alarm{}, false, err
	}
	if err := m.waitLoaded(ctx); err != nil {
		return Alarm{}, false, err
	}
	a := Alarm{AlarmID: id, EntityInstanceID: entity, Severity: d.Severity, ReasonText: fill(d.Reason, entity, fields),
		AlarmType: d.AlarmType, ProbableCause: d.ProbableCause, ProposedRepairAction: d.Repair,
		ServiceAffecting: d.ServiceAffecting, MgmtAffecting: d.MgmtAffecting, DegradeAffecting: d.DegradeAffecting,
		Site: m.cfg.Site}
	k := key{id, entity}
	m.mu.Lock()
	cur, active := m.active[k]
	if active && cur.Severity == a.Severity && cur.ReasonText == a.ReasonText {
		m.mu.Unlock()
		m.deduped.Inc()
		return cur, false, nil
	}
	if !active && m.inflight[k] == 0 && id != StormAlarm {
		if over := m.overLimit(id); over != "" {
			m.mu.Unlock()
			m.collapsed.WithLabelValues(id).Inc()
			m.storm(ctx, over)
			return Alarm{}, false, fmt.Errorf("%w (%s)", ErrStorm, id)
		}
	}
	m.inflight[k]++
	m.inflightID[id]++
	m.mu.Unlock()
	// Run updates the active set in commit order and releases the
	// reservation, whatever becomes of the call.
	r, err := m.submitReq(ctx, request{op: Op{Kind: OpRaise, Alarm: a}, reserved: true})
	return r.Alarm, r.Changed, err
}

// overLimit tells which limit a new alarm of id would break: id itself,
// "all", or "" for none. m.mu is held.
func (m *Manager) overLimit(id string) string {
	l := m.cfg.Limits
	if m.perID[id]+m.inflightID[id] >= l.MaxActivePerID {
		return id
	}
	total := len(m.active)
	for _, n := range m.inflightID {
		total += n
	}
	if total >= l.MaxActive {
		return "all"
	}
	return ""
}

// storm raises 100.150 for target (an alarm ID or "all") unless it is
// active or being raised: the active set itself says, so a clear racing a
// raise cannot leave a storm unalarmed.
func (m *Manager) storm(ctx context.Context, target string) {
	k := key{StormAlarm, stormEntity(target)}
	m.mu.Lock()
	_, on := m.active[k]
	on = on || m.inflight[k] > 0
	m.mu.Unlock()
	if on {
		return
	}
	limit := m.cfg.Limits.MaxActivePerID
	if target == "all" {
		limit = m.cfg.Limits.MaxActive
	}
	m.cfg.Logger.Warn("alarm storm: raises beyond the active limit are counted, not stored", "alarm_id", target, "limit", limit)
	if _, _, err := m.Raise(ctx, StormAlarm, stormEntity(target), map[string]string{"alarm": target, "limit": fmt.Sprint(limit)}); err != nil {
		m.cfg.Logger.Error("raising the storm alarm failed", "alarm_id", target, "err", err)
	}
}

// calmLoop clears storm alarms, woken after batches that cleared alarms.
func (m *Manager) calmLoop(ctx context.Context, wake <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
			m.calm(ctx)
		}
	}
}

// calm clears storm alarms whose counts dropped below 90% of the limit.
func (m *Manager) calm(ctx context.Context) {
	m.mu.Lock()
	var done []string
	for k := range m.active {
		if k.id != StormAlarm {
			continue
		}
		target := stormTarget(k.entity)
		n, limit := m.perID[target], m.cfg.Limits.MaxActivePerID
		if target == "all" {
			n, limit = len(m.active), m.cfg.Limits.MaxActive
		}
		if n < limit*9/10 {
			done = append(done, target)
		}
	}
	m.mu.Unlock()
	for _, target := range done {
		if _, err := m.Clear(ctx, StormAlarm, stormEntity(target)); err != nil {
			m.cfg.Logger.Error("clearing the storm alarm failed", "alarm_id", target, "err", err)
		}
	}
}

// applied brings the active set up to a committed batch, in its order, and
// releases the raises' reservations. It runs in Run's goroutine. It
// reports whether anything was cleared.
func (m *Manager) applied(batch []request, res []OpResult, err error) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	cleared := false
	drop := func(k key) {
		if _, ok := m.active[k]; ok {
			delete(m.active, k)
			if m.perID[k.id]--; m.perID[k.id] <= 0 {
				delete(m.perID, k.id)
			}
			cleared = true
		}
	}
	for i, r := range batch {
		k := key{r.op.Alarm.AlarmID, r.op.Alarm.EntityInstanceID}
		if r.reserved {
			if m.inflight[k]--; m.inflight[k] <= 0 {
				delete(m.inflight, k)
			}
			if m.inflightID[k.id]--; m.inflightID[k.id] <= 0 {
				delete(m.inflightID, k.id)
			}
		}
		if err != nil {
			continue
		}
		switch r.op.Kind {
		case OpRaise:
			if _, ok := m.active[k]; !ok {
				m.perID[k.id]++
			}
			m.active[k] = res[i].Alarm
		case OpClear:
			drop(k)
		case OpClearPrefix:
			for k := range m.active {
				if k.entity == r.op.Prefix || strings.HasPrefix(k.entity, r.op.Prefix+".") {
					drop(k)
				}
			}
		}
	}
	return cleared
}

// Log appends a log entry (a catalogue entry with log: true) for entity.
// Beyond the rate limit per ID it fails with ErrLogStorm.
func (m *Manager) Log(ctx context.Context, id, entity string, fields map[string]string) (Event, error) {
	d, ok := m.cfg.Catalog.Lookup(id)
	if !ok {
		return Event{}, fmt.Errorf("%w: %s", ErrUnknownAlarm, id)
	}
	if !d.Log {
		return Event{}, fmt.Errorf("%w: %s (use Raise)", ErrNotLog, id)
	}
	if err := ValidateEntity("entity_instance_id", entity); err != nil {
		return Event{}, err
	}
	m.mu.Lock()
	b := m.logs[id]
	if b == nil {
		b = &bucket{tokens: float64(m.cfg.Limits.LogBurst), at: time.Now()}
		m.logs[id] = b
	}
	ok = b.take(time.Now(), m.cfg.Limits.LogRate, float64(m.cfg.Limits.LogBurst))
	m.mu.Unlock()
	if !ok {
		m.dropped.WithLabelValues(id).Inc()
		return Event{}, fmt.Errorf("%w (%s)", ErrLogStorm, id)
	}
	uid, _ := uuid.NewV7()
	ev := Event{UUID: uid.String(), Type: EventLog, AlarmID: id, EntityInstanceID: entity, Severity: string(d.Severity),
		ReasonText: fill(d.Reason, entity, fields), Site: m.cfg.Site, Timestamp: time.Now().UTC()}
	if _, err := m.submit(ctx, Op{Kind: OpLog, Event: &ev}); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	at     time.Time
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Clear clears alarm id on entity; clearing an absent alarm is a no-op.
func (m *Manager) Clear(ctx context.Context, id, entity string) (bool, error) {
	if _, ok := m.cfg.Catalog.Lookup(id); !ok {
		return false, fmt.Errorf("%w: %s", ErrUnknownAlarm, id)
	}
	if err := ValidateEntity("entity_instance_id", entity); err != nil {
		return false, err
	}
	if err := m.waitLoaded(ctx); err != nil {
		return false, err
	}
	k := key{id, entity}
	m.mu.Lock()
	_, active := m.active[k]
	pending := m.inflight[k] > 0
	m.mu.Unlock()
	if !active && !pending {
		return false, nil // clearing an absent alarm is a no-op
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
	if err := m.waitLoaded(ctx); err != nil {
		return 0, err
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
	if a.Site != m.cfg.Site {
		// A site's alarm held at central clears at the site.
		return Alarm{}, errs.New(errs.Conflict, fmt.Sprintf("alarm %s belongs to site %s: clear it there (petrel --site %s alarm delete %s)",
			id, a.Site, a.Site, id))
	}
	r, err := m.submit(ctx, Op{Kind: OpClear, Alarm: Alarm{AlarmID: a.AlarmID, EntityInstanceID: a.EntityInstanceID}})
	if err == nil && !r.Changed {
		return Alarm{}, fmt.Errorf("%w: %s", ErrAlarmNotFound, id)
	}
	return a, err
}

// Ack records who acknowledged an alarm, and when.
func (m *Manager) Ack(ctx context.Context, id, user string) (Alarm, error) {
	a, err := m.cfg.Store.Ack(ctx, id, user, time.Now().UTC())
	if err != nil {
		return Alarm{}, err
	}
	m.mu.Lock()
	k := key{a.AlarmID, a.EntityInstanceID}
	if cur, ok := m.active[k]; ok && a.Site == m.cfg.Site && cur.UUID == a.UUID {
		m.active[k] = a
	}
	m.mu.Unlock()
	return a, nil
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
	return m.submitReq(ctx, request{op: op})
}

func (m *Manager) submitReq(ctx context.Context, req request) (OpResult, error) {
	req.reply = make(chan response, 1)
	select {
	case m.in <- req:
	case <-ctx.Done():
		if req.reserved {
			m.applied([]request{req}, nil, ctx.Err()) // release the reservation
		}
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
		err := m.load(ctx)
		if err == nil {
			break
		}
		m.cfg.Logger.Error("reading the active alarms failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	close(m.loaded)
	calmWake := make(chan struct{}, 1)
	calmCtx, stopCalm := context.WithCancel(ctx)
	calmDone := make(chan struct{})
	go func() { defer close(calmDone); m.calmLoop(calmCtx, calmWake) }()
	defer func() { stopCalm(); <-calmDone }()
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
		if m.applied(batch, res, err) {
			select {
			case calmWake <- struct{}{}:
			default:
			}
		}
		if err != nil {
			// A failed COMMIT may still have committed: memory follows the
			// store again before anyone is answered.
			if lerr := m.load(context.WithoutCancel(ctx)); lerr != nil {
				m.cfg.Logger.Error("re-reading the active alarms failed", "err", lerr)
			}
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
