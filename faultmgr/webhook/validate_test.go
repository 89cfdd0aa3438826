package webhook

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
)

func TestBackoff(t *testing.T) {
	const lo, hi = time.Second, time.Minute
	for _, tc := range []struct {
		n          int
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
	}{
		{1, 0, 0, lo}, // 0.75 s is raised to the minimum
		{1, 0, 0.999999, 1249999500 * time.Nanosecond},
		{2, 0, 0.5, 2 * time.Second}, // doubles
		{4, 0, 0.5, 8 * time.Second},
		{6, 0, 0.5, 32 * time.Second},
		{7, 0, 0.5, hi},                              // 64 s: capped
		{7, 0, 0, 45 * time.Second},                  // jitter below the cap stays
		{1000, 0, 0.5, hi},                           // no overflow
		{1, 30 * time.Second, 0.5, 30 * time.Second}, // Retry-After respected
		{1, time.Hour, 0.5, hi},                      // within the cap
	} {
		if got := backoff(tc.n, lo, hi, tc.retryAfter, tc.jitter); got != tc.want {
			t.Errorf("backoff(%d, retry-after %v, jitter %v) = %v; want %v", tc.n, tc.retryAfter, tc.jitter, got, tc.want)
		}
	}
}

func TestParseURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://alerts.example.com/petrel": true,
		"http://127.0.0.1:8080/hook?x=1":    true,
		"https://[2001:db8::1]:8443/":       true,
		"https://receiver.":                 true,
		"":                                  false,
		"ftp://example.com/":                false,
		"file:///etc/passwd":                false,
		"https://user:pw@example.com/":      false,
		"https://user@example.com/":         false,
		"https://example.com/#frag":         false,
		"https:example.com":                 false,
		"https:///path":                     false,
		"https://exa mple.com/":             false,
		"https://example.com:0/":            false,
		"https://example.com:99999/":        false,
		"https://example.com:08080/":        false,
		"https://-bad-.example/":            false,
		"https://under_score.example/":      false,
		"https://[fe80::1%25eth0]/":         false,
		"https://example.com/" + strings.Repeat("a", MaxURLLength): false,
	} {
		_, _, err := ParseURL(raw)
		var fe *errs.FieldError
		if ok != (err == nil) || (err != nil && (!errors.As(err, &fe) || fe.Field != "url")) {
			t.Errorf("ParseURL(%q) = %v; want ok=%v (errors name the url field)", raw, err, ok)
		}
	}
}

func TestFilter(t *testing.T) {
	f, err := Filter{}.Validate()
	if err != nil || len(f.Types) != 2 || f.Severities == nil || f.AlarmIDs == nil || f.Sites == nil {
		t.Fatalf("Filter{}.Validate() = %+v, %v; want set and clear, empty lists", f, err)
	}
	set := faultmgr.Event{Type: faultmgr.EventSet, AlarmID: "200.004", Severity: "critical", Site: "site-1"}
	audit := faultmgr.Event{Type: faultmgr.EventAudit, User: "admin"}
	for _, tc := range []struct {
		f    Filter
		e    faultmgr.Event
		want bool
	}{
		{Filter{}, set, true},
		{Filter{}, audit, false}, // set and clear by default
		{Filter{Types: []faultmgr.EventType{faultmgr.EventAudit}}, audit, true},
		{Filter{Severities: []faultmgr.Severity{faultmgr.Critical, faultmgr.Major}}, set, true},
		{Filter{Severities: []faultmgr.Severity{faultmgr.Minor}}, set, false},
		{Filter{Types: []faultmgr.EventType{faultmgr.EventAudit}, Severities: []faultmgr.Severity{faultmgr.Minor}}, audit, false},
		{Filter{AlarmIDs: []string{"200."}}, set, true},
		{Filter{AlarmIDs: []string{"280.", "200.004"}}, set, true},
		{Filter{AlarmIDs: []string{"200.01"}}, set, false},
		{Filter{Sites: []string{"site-1"}}, set, true},
		{Filter{Sites: []string{"site-2"}}, set, false},
	} {
		if got := tc.f.Match(tc.e); got != tc.want {
			t.Errorf("%+v.Match(%s %s) = %v; want %v", tc.f, tc.e.Type, tc.e.AlarmID, got, tc.want)
		}
	}
	for field, bad := range map[string]Filter{
		"filter.types":      {Types: []faultmgr.EventType{"boom"}},
		"filter.severities": {Severities: []faultmgr.Severity{"loud"}},
		"filter.alarm_ids":  {AlarmIDs: []string{"2000"}},
		"filter.sites":      {Sites: []string{"Site One"}},
	} {
		_, err := bad.Validate()
		var fe *errs.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("Validate(%+v) = %v; want invalid %s", bad, err, field)
		}
	}
	for _, p := range []string{"2", "20", "200", "200.", "200.0", "200.004"} {
		if _, err := (Filter{AlarmIDs: []string{p}}).Validate(); err != nil {
			t.Errorf("alarm ID prefix %q refused: %v", p, err)
		}
	}
	for _, p := range []string{"", ".", "200.0041", "2000.", "a00.", "200.%"} {
		if _, err := (Filter{AlarmIDs: []string{p}}).Validate(); err == nil {
			t.Errorf("alarm ID prefix %q accepted", p)
		}
	}
}
