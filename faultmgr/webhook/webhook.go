// Package webhook delivers fault-management events (alarm sets and clears
// by default) to HTTP receivers that an admin registers: every delivery is
// a signed JSON POST, retried with capped exponential backoff until the
// receiver answers 2xx, strictly in event-log order per webhook.
//
// Each webhook keeps a cursor into the event log (faultmgr.Log): the last
// sequence number it has handled. A worker per webhook reads the log after
// its cursor, so a slow or dead receiver holds back only its own webhook and
// never the writers of the log. The cursor moves only past events the
// receiver acknowledged (or that the filter skips), so delivery is
// at-least-once; a delivery's ID is the same on every attempt, so receivers
// drop duplicates by it.
//
// Targets are checked against an egress policy when registered and again
// on every connection (internal/egress); signing secrets are generated
// here, shown once, and stored sealed (internal/sealed).
package webhook

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/inventory"
)

// Webhook is a registered receiver. JSON keys are the API's.
type Webhook struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Description string    `json:"description"`
	Filter      Filter    `json:"filter"`
	Enabled     bool      `json:"enabled"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	Status      Status    `json:"status"`
	// Epoch is the event log's epoch the cursor belongs to.
	Epoch string `json:"-"`
}

// Filter selects the events a webhook receives. Values within a list are
// alternatives; the lists all have to match. An empty list matches all.
type Filter struct {
	Types      []faultmgr.EventType `json:"types"`      // default: set and clear
	Severities []faultmgr.Severity  `json:"severities"` // events without a severity never match a non-empty list
	AlarmIDs   []string             `json:"alarm_ids"`  // prefixes: "200." matches 200.001 and 200.010
	Sites      []string             `json:"sites"`      // at central: the sites whose events to send
}

// DefaultTypes are the event types a webhook receives unless its filter
// names others.
var DefaultTypes = []faultmgr.EventType{faultmgr.EventSet, faultmgr.EventClear}

// Match reports whether the filter selects e.
func (f Filter) Match(e faultmgr.Event) bool {
	types := f.Types
	if len(types) == 0 {
		types = DefaultTypes
	}
	if !slices.Contains(types, e.Type) {
		return false
	}
	if len(f.Severities) > 0 && !slices.Contains(f.Severities, faultmgr.Severity(e.Severity)) {
		return false
	}
	if len(f.AlarmIDs) > 0 && !slices.ContainsFunc(f.AlarmIDs, func(p string) bool { return strings.HasPrefix(e.AlarmID, p) }) {
		return false
	}
	if len(f.Sites) > 0 && !slices.Contains(f.Sites, e.Site) {
		return false
	}
	return true
}

// State summarises a webhook's delivery status.
type State string

const (
	StateOK       State = "ok"       // enabled, the last attempt succeeded (or none yet)
	StateFailing  State = "failing"  // enabled, retrying after failures
	StateDisabled State = "disabled" // paused by an admin; the cursor waits
)

// Status is how delivery to a webhook is going.
type Status struct {
	State               State      `json:"state"`
	Cursor              uint64     `json:"cursor"` // the last event-log sequence number handled
	Lag                 uint64     `json:"lag"`    // events logged after the cursor (not all may match the filter)
	Delivered           uint64     `json:"delivered"`
	Missed              uint64     `json:"missed"` // events trimmed from the history before they could be delivered
	ConsecutiveFailures int        `json:"consecutive_failures"`
	LastAttemptAt       *time.Time `json:"last_attempt_at"`
	LastSuccessAt       *time.Time `json:"last_success_at"`
	LastError           string     `json:"last_error"`
	LastErrorAt         *time.Time `json:"last_error_at"`
}

// CreateRequest is the body of POST /v1/webhooks.
type CreateRequest struct {
	URL         string  `json:"url"`
	Description string  `json:"description,omitempty"`
	Filter      *Filter `json:"filter,omitempty"`
	Enabled     *bool   `json:"enabled,omitempty"` // default true
}

// Created is the answer to a create: the signing secret, shown only now.
type Created struct {
	Secret  string  `json:"secret"`
	Webhook Webhook `json:"webhook"`
}

// UpdateRequest is the body of PATCH /v1/webhooks/{id}: absent fields stay.
type UpdateRequest struct {
	Description *string `json:"description,omitempty"`
	Filter      *Filter `json:"filter,omitempty"`
	Enabled     *bool   `json:"enabled,omitempty"`
}

// TestResult is the answer to POST /v1/webhooks/{id}/test.
type TestResult struct {
	DeliveryID string `json:"delivery_id"`
	OK         bool   `json:"ok"`
	StatusCode int    `json:"status_code"` // 0: no HTTP answer
	Error      string `json:"error"`
	DurationMS int64  `json:"duration_ms"`
}

// Store keeps webhooks, their sealed secrets and their cursors.
// Implementations: faultdb.
type Store interface {
	CreateWebhook(ctx context.Context, w Webhook, sealedSecret []byte) error
	Webhook(ctx context.Context, id string) (Webhook, error) // ErrNotFound
	WebhookSecret(ctx context.Context, id string) ([]byte, error)
	// Webhooks lists webhooks oldest first (by ID), paged.
	Webhooks(ctx context.Context, opts page.Options) ([]Webhook, string, error)
	CountWebhooks(ctx context.Context) (int, error)
	// UpdateWebhook stores w's description, filter and enabled flag.
	UpdateWebhook(ctx context.Context, w Webhook) error
	DeleteWebhook(ctx context.Context, id string) error
	// SaveWebhookStatus stores a webhook's cursor (in epoch) and status; a
	// deleted webhook is no error.
	SaveWebhookStatus(ctx context.Context, id, epoch string, st Status) error
}

// Errors of webhook handling.
var (
	ErrNotFound = errs.New(errs.NotFound, "webhook not found")
	ErrTooMany  = errs.New(errs.Conflict, "too many webhooks")
)

// Input limits.
const (
	MaxURLLength         = 2048
	MaxDescriptionLength = 200
	maxFilterValues      = 32
)

var alarmIDPrefix = regexp.MustCompile(`^[0-9]{1,3}(\.[0-9]{0,3})?$`)

// Validate checks a filter's values and returns it normalised: types
// defaulted, duplicates dropped, never nil lists.
func (f Filter) Validate() (Filter, error) {
	out := Filter{Types: []faultmgr.EventType{}, Severities: []faultmgr.Severity{}, AlarmIDs: []string{}, Sites: []string{}}
	for _, t := range f.Types {
		if !t.Valid() {
			return Filter{}, errs.Field("filter.types", "%q: want set, clear, log or audit", t)
		}
		if !slices.Contains(out.Types, t) {
			out.Types = append(out.Types, t)
		}
	}
	if len(out.Types) == 0 {
		out.Types = append(out.Types, DefaultTypes...)
	}
	for _, s := range f.Severities {
		if !s.Valid() {
			return Filter{}, errs.Field("filter.severities", "%q: want critical, major, minor or warning", s)
		}
		if !slices.Contains(out.Severities, s) {
			out.Severities = append(out.Severities, s)
		}
	}
	if len(f.AlarmIDs) > maxFilterValues {
		return Filter{}, errs.Field("filter.alarm_ids", "at most %d prefixes", maxFilterValues)
	}
	for _, p := range f.AlarmIDs {
		if !alarmIDPrefix.MatchString(p) {
			return Filter{}, errs.Field("filter.alarm_ids", "%q: want an alarm ID or a prefix of one, e.g. 200.004 or 200.", p)
		}
		if !slices.Contains(out.AlarmIDs, p) {
			out.AlarmIDs = append(out.AlarmIDs, p)
		}
	}
	if len(f.Sites) > maxFilterValues {
		return Filter{}, errs.Field("filter.sites", "at most %d sites", maxFilterValues)
	}
	for _, s := range f.Sites {
		if err := inventory.ValidateSiteName("filter.sites", s); err != nil {
			return Filter{}, err
		}
		if !slices.Contains(out.Sites, s) {
			out.Sites = append(out.Sites, s)
		}
	}
	return out, nil
}

var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// ParseURL checks a target URL's form: http or https, a host, no user
// information or fragment, at most MaxURLLength characters. It returns
// the URL and its host (an address or a DNS name).
func ParseURL(raw string) (*url.URL, string, error) {
	bad := func(format string, args ...any) (*url.URL, string, error) {
		return nil, "", errs.Field("url", format, args...)
	}
	if raw == "" {
		return bad("is required")
	}
	if len(raw) > MaxURLLength {
		return bad("longer than %d characters", MaxURLLength)
	}
	if strings.IndexFunc(raw, func(r rune) bool { return r < 0x21 || r == 0x7f }) >= 0 {
		return bad("contains spaces or control characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("scheme %q: want http or https", u.Scheme)
	case u.Opaque != "" || u.Host == "":
		return bad("has no host; want e.g. https://alerts.example.com/petrel")
	case u.User != nil:
		return bad("must not carry user information (user:password@); receivers authenticate deliveries by their signature")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return bad("must not have a fragment")
	}
	host := u.Hostname()
	if p := u.Port(); p != "" {
		var n int
		if _, err := fmt.Sscan(p, &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != p {
			return bad("port %q: want 1-65535", p)
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return bad("must not name an interface zone")
		}
		return u, host, nil
	}
	if strings.Contains(u.Host, "[") || net.ParseIP(host) != nil {
		return bad("host %q is not a valid address", host)
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) == 0 || len(name) > 253 {
		return bad("host %q is not a valid DNS name", host)
	}
	for _, l := range strings.Split(name, ".") {
		if !hostLabel.MatchString(l) {
			return bad("host %q is not a valid DNS name", host)
		}
	}
	return u, host, nil
}

// validateDescription checks a description: printable, bounded.
func validateDescription(d string) error {
	if len(d) > MaxDescriptionLength {
		return errs.Field("description", "longer than %d characters", MaxDescriptionLength)
	}
	if strings.IndexFunc(d, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return errs.Field("description", "contains control characters")
	}
	return nil
}
