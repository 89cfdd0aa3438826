package ui_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/ui"
)

// dash is a dashboard over a real auth service (SQLite) with a settable
// alarm summary, and one session per role.
type dash struct {
	h        http.Handler
	sum      faultmgr.Summary
	sumErr   error
	sessions map[auth.Role]string
}

func newDash(t *testing.T, localSite string) *dash {
	t.Helper()
	ctx := context.Background()
	st, err := authdb.Open(ctx, sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := auth.New(auth.Config{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	d := &dash{sessions: map[auth.Role]string{}}
	for _, role := range []auth.Role{auth.Reader, auth.Operator, auth.Admin} {
		name := string(role) + "-1"
		if _, err := svc.CreateUser(ctx, name, role, "password-of-"+name); err != nil {
			t.Fatal(err)
		}
		secret, _, err := svc.Login(ctx, name, "password-of-"+name)
		if err != nil {
			t.Fatal(err)
		}
		d.sessions[role] = secret
	}
	cfg := ui.Config{Auth: svc, LocalSite: localSite, Logger: slog.New(slog.DiscardHandler),
		AlarmSummary: func(context.Context) (faultmgr.Summary, error) { return d.sum, d.sumErr },
		Audit:        func(context.Context, string, string, string, string, string) {}}
	if localSite == "" {
		cfg.Sites = func(context.Context) ([]ui.SiteRow, error) {
			return []ui.SiteRow{{Name: "site-b", Status: "ok"}, {Name: "site-a", Status: "critical"}}, nil
		}
		cfg.Site = func(_ context.Context, name string) error {
			if name != "site-a" && name != "site-b" {
				return errors.New("no such subcloud")
			}
			return nil
		}
	}
	u, err := ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.h = u
	return d
}

// get serves GET path with the session of role ("" for none).
func (d *dash) get(t *testing.T, role auth.Role, path string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "https://petrel.test"+path, nil)
	if role != "" {
		req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: d.sessions[role]})
	}
	w := httptest.NewRecorder()
	d.h.ServeHTTP(w, req)
	resp := w.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestNewNeedsTheFleetOrItsSite(t *testing.T) {
	base := ui.Config{Auth: &auth.Service{}, Logger: slog.New(slog.DiscardHandler),
		AlarmSummary: func(context.Context) (faultmgr.Summary, error) { return faultmgr.Summary{}, nil },
		Audit:        func(context.Context, string, string, string, string, string) {}}
	if _, err := ui.New(base); err == nil {
		t.Error("New(central without Sites and Site) = nil error; want one")
	}
	site := base
	site.LocalSite = "site-a"
	if _, err := ui.New(site); err != nil {
		t.Errorf("New(a site's dashboard) = %v", err)
	}
	noSummary := site
	noSummary.AlarmSummary = nil
	if _, err := ui.New(noSummary); err == nil {
		t.Error("New(without AlarmSummary) = nil error; want one")
	}
}

// Every page but the login form needs a session; a missing or unknown one
// is sent to the login page.
func TestPagesNeedASession(t *testing.T) {
	for _, tc := range []struct {
		localSite string
		paths     []string
	}{
		{"", []string{"/", "/?status=ok", "/ui/alarms", "/ui/alarms?severity=major", "/ui/sites/site-a", "/ui/events", "/ui/patching", "/ui/patching?site=site-a"}},
		{"site-a", []string{"/", "/ui/alarms", "/ui/events", "/ui/patching"}},
	} {
		d := newDash(t, tc.localSite)
		d.sessions["forged"] = "pt_not-a-token"
		for _, p := range tc.paths {
			for _, role := range []auth.Role{"", "forged"} {
				resp, _ := d.get(t, role, p)
				if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
					t.Errorf("site %q: GET %s with session %q = %d %s; want 303 to /ui/login", tc.localSite, p, role,
						resp.StatusCode, resp.Header.Get("Location"))
				}
			}
		}
	}
}

var (
	inlineScript = regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`)
	inlineStyle  = regexp.MustCompile(`<style|\sstyle=`)
	inlineEvent  = regexp.MustCompile(`\son[a-z]+=`)
)

// Every page carries a strict CSP and the other security headers, and has
// no inline script, style or event handler the CSP would block.
func TestPagesAreStrict(t *testing.T) {
	central, site := newDash(t, ""), newDash(t, "site-a")
	for _, tc := range []struct {
		d    *dash
		role auth.Role
		path string
	}{
		{central, "", "/ui/login"}, {central, auth.Reader, "/"}, {central, auth.Operator, "/ui/alarms"},
		{central, auth.Reader, "/ui/sites/site-a"}, {site, "", "/ui/login"}, {site, auth.Operator, "/"},
		{site, auth.Reader, "/ui/alarms"}, {central, auth.Admin, "/ui/events"}, {central, auth.Admin, "/ui/patching?site=site-a"},
		{site, auth.Admin, "/ui/patching"}, {site, auth.Reader, "/ui/events?type=audit"}, {central, auth.Reader, "/?status=ok&q=a"},
	} {
		resp, page := tc.d.get(t, tc.role, tc.path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s as %q = %d; want 200", tc.path, tc.role, resp.StatusCode)
			continue
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", tc.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: CSP %q allows unsafe sources", tc.path, csp)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: X-Frame-Options %q, Cache-Control %q", tc.path, resp.Header.Get("X-Frame-Options"), resp.Header.Get("Cache-Control"))
		}
		for name, re := range map[string]*regexp.Regexp{"script": inlineScript, "style": inlineStyle, "event handler": inlineEvent} {
			if m := re.FindString(page); m != "" {
				t.Errorf("GET %s has an inline %s: %q", tc.path, name, m)
			}
		}
	}
}

// The banner shows the summary's counts on every signed-in page, at
// central and at a site, and links to the alarms page.
func TestAlarmBannerOnEveryPage(t *testing.T) {
	central, site := newDash(t, ""), newDash(t, "site-a")
	for _, d := range []*dash{central, site} {
		d.sum = faultmgr.Summary{Critical: 2, Major: 0, Minor: 7, Warning: 1}
	}
	count := func(page, sev string) string {
		m := regexp.MustCompile(`data-alarm-count="` + sev + `">([^<]*)<`).FindStringSubmatch(page)
		if m == nil {
			return "(none)"
		}
		return m[1]
	}
	for _, tc := range []struct {
		d    *dash
		path string
	}{{central, "/"}, {central, "/ui/alarms"}, {central, "/ui/sites/site-b"}, {site, "/"}, {site, "/ui/alarms"}} {
		_, page := tc.d.get(t, auth.Reader, tc.path)
		if !strings.Contains(page, `id="alarm-banner"`) || !strings.Contains(page, `href="/ui/alarms"`) {
			t.Errorf("GET %s: no alarm banner linking to /ui/alarms", tc.path)
		}
		for sev, want := range map[string]string{"critical": "2", "major": "0", "minor": "7", "warning": "1"} {
			if got := count(page, sev); got != want {
				t.Errorf("GET %s: banner %s = %s; want %s", tc.path, sev, got, want)
			}
		}
		if !strings.Contains(page, `class="sev major zero"`) || !strings.Contains(page, `class="sev critical"`) {
			t.Errorf("GET %s: zero counts are not marked zero, or non-zero ones are", tc.path)
		}
	}
	if _, page := central.get(t, "", "/ui/login"); strings.Contains(page, "alarm-banner") {
		t.Error("the login page shows the alarm banner")
	}
	central.sumErr = errors.New("store down")
	if _, page := central.get(t, auth.Reader, "/"); count(page, "critical") != "?" {
		t.Errorf("banner with the summary failing = %s; want ?", count(page, "critical"))
	}
}

// Operators get action buttons, readers none; central shows a site column
// and filter, a site neither.
func TestAlarmsPage(t *testing.T) {
	central, site := newDash(t, ""), newDash(t, "site-a")
	for _, tc := range []struct {
		d          *dash
		role       auth.Role
		act, fleet bool
	}{
		{central, auth.Reader, false, true}, {central, auth.Operator, true, true}, {central, auth.Admin, true, true},
		{site, auth.Reader, false, false}, {site, auth.Operator, true, false},
	} {
		_, page := tc.d.get(t, tc.role, "/ui/alarms")
		if got := strings.Contains(page, "<th>Actions</th>"); got != tc.act {
			t.Errorf("fleet %v, %s: Actions column = %v; want %v", tc.fleet, tc.role, got, tc.act)
		}
		if got := strings.Contains(page, `data-can-act="true"`); got != tc.act {
			t.Errorf("fleet %v, %s: data-can-act true = %v; want %v", tc.fleet, tc.role, got, tc.act)
		}
		if got := strings.Contains(page, "<th>Site</th>"); got != tc.fleet {
			t.Errorf("fleet %v, %s: Site column = %v; want %v", tc.fleet, tc.role, got, tc.fleet)
		}
		if got := strings.Contains(page, `<select name="site">`); got != tc.fleet {
			t.Errorf("fleet %v, %s: site filter = %v; want %v", tc.fleet, tc.role, got, tc.fleet)
		}
		if !strings.Contains(page, `<meta name="csrf-token" content="`) || !strings.Contains(page, `<table id="alarms">`) {
			t.Errorf("fleet %v, %s: no CSRF token or alarm table", tc.fleet, tc.role)
		}
	}
	// The filter form shows the query it was opened with; the site list is sorted.
	_, page := central.get(t, auth.Reader, "/ui/alarms?severity=minor&alarm_id=200.004&entity=host%3Dc-0&site=site-b&suppressed=include")
	for _, want := range []string{`<option value="minor" selected>`, `name="alarm_id" value="200.004"`, `name="entity" value="host=c-0"`,
		`<option value="site-b" selected>`, `value="include" checked`} {
		if !strings.Contains(page, want) {
			t.Errorf("filtered alarms page lacks %s", want)
		}
	}
	if a, b := strings.Index(page, `value="site-a"`), strings.Index(page, `value="site-b"`); a < 0 || a > b {
		t.Errorf("site options out of order (site-a at %d, site-b at %d)", a, b)
	}
	// Whatever the query holds is escaped.
	_, page = central.get(t, auth.Reader, `/ui/alarms?alarm_id=%22%3E%3Cscript%3Ealert(1)%3C/script%3E&entity=%22%20onfocus%3D%22x`)
	if strings.Contains(page, "<script>alert") || strings.Contains(page, `" onfocus`) ||
		!strings.Contains(page, `name="entity" value="&#34; onfocus=&#34;x"`) {
		t.Error("the alarms page echoes its query unescaped")
	}
}

// A site's dashboard: its home page is the site's hosts read directly, and
// there are no fleet pages.
func TestSiteDashboard(t *testing.T) {
	d := newDash(t, "site-a")
	resp, page := d.get(t, auth.Reader, "/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-api=""`) || !strings.Contains(page, "<h1>Site site-a</h1>") {
		t.Errorf("site home = %d:\n%s", resp.StatusCode, page)
	}
	if !strings.Contains(page, `data-fleet="false"`) {
		t.Error("a site's page claims the fleet (the script would open central's event stream)")
	}
	if resp, _ := d.get(t, auth.Reader, "/ui/sites/site-a"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/sites/site-a at a site = %d; want 404", resp.StatusCode)
	}
	c := newDash(t, "")
	if _, page := c.get(t, auth.Reader, "/ui/sites/site-a"); !strings.Contains(page, `data-api="/v1/subclouds/site-a/api"`) {
		t.Error("central's site page does not read the site's hosts through the relay")
	}
}

// The script writes API data only as text.
func TestScriptWritesNoHTML(t *testing.T) {
	js, err := os.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(string(js), sink) {
			t.Errorf("app.js uses %s; build elements and set textContent instead", sink)
		}
	}
}
