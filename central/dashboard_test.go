package central_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
)

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser(t *testing.T, d servertest.Daemon) *http.Client {
	jar, _ := cookiejar.New(nil)
	hc := servertest.HTTPClient(t, d)
	return &http.Client{Transport: hc.Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, b *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := b.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func post(t *testing.T, b *http.Client, u string, form url.Values, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

func TestDashboardSessions(t *testing.T) {
	f := startCentral(t)
	ctx := context.Background()
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{Name: "site-x", Shape: inventory.Simplex}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: "ops", Role: auth.Operator, Password: "operator-pass-1"}, nil); err != nil {
		t.Fatal(err)
	}
	base := f.c.Shell().URL()
	b := browser(t, f.c)

	// Not logged in: sent to the login page.
	if resp, _ := get(t, b, base+"/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("GET / without a session = %d %s; want 303 to /ui/login", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := get(t, b, base+"/ui/login")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("login page = %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("login page has no CSRF field")
	}
	// A forged login (no matching CSRF token) is refused.
	if resp, _ := post(t, b, base+"/ui/login", url.Values{"username": {"ops"}, "password": {"operator-pass-1"}, "csrf_token": {"forged"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("login with a forged CSRF token = %d; want 403", resp.StatusCode)
	}
	_, page = get(t, b, base+"/ui/login")
	m = csrfField.FindStringSubmatch(page)
	if resp, body := post(t, b, base+"/ui/login", url.Values{"username": {"ops"}, "password": {"wrong"}, "csrf_token": {m[1]}}, nil); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong user or password") {
		t.Errorf("wrong password = %d", resp.StatusCode)
	}
	_, page = get(t, b, base+"/ui/login")
	m = csrfField.FindStringSubmatch(page)
	resp, _ = post(t, b, base+"/ui/login", url.Values{"username": {"ops"}, "password": {"operator-pass-1"}, "csrf_token": {m[1]}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login = %d; want 303", resp.StatusCode)
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || !session.Secure || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie = %+v; want HttpOnly, Secure, SameSite=Strict", session)
	}

	// The fleet page lists the subcloud; the script is external (CSP).
	resp, page = get(t, b, base+"/")
	if resp.StatusCode != 200 || !strings.Contains(page, `data-name="site-x"`) || !strings.Contains(page, "ops (operator)") {
		t.Fatalf("fleet page = %d:\n%s", resp.StatusCode, page)
	}
	if regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`).MatchString(page) || strings.Contains(page, " on") && regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Error("the fleet page has inline script or event handlers")
	}
	if resp, _ := get(t, b, base+"/ui/static/app.js"); resp.StatusCode != 200 {
		t.Errorf("app.js = %d", resp.StatusCode)
	}
	if resp, _ := get(t, b, base+"/ui/sites/site-x"); resp.StatusCode != 200 {
		t.Errorf("site page = %d", resp.StatusCode)
	}
	if resp, _ := get(t, b, base+"/ui/sites/site-nope"); resp.StatusCode != 404 {
		t.Errorf("unknown site page = %d; want 404", resp.StatusCode)
	}
	csrf := csrfField.FindStringSubmatch(page)[1]

	// The session cookie reads the API; a write needs the CSRF header.
	if resp, _ := get(t, b, base+"/v1/subclouds"); resp.StatusCode != 200 {
		t.Errorf("GET /v1/subclouds with the session cookie = %d", resp.StatusCode)
	}
	body := `{"name":"site-y","shape":"duplex"}`
	for _, tc := range []struct {
		hdr  map[string]string
		want int
	}{{nil, 403}, {map[string]string{auth.CSRFHeader: "forged"}, 403}, {map[string]string{auth.CSRFHeader: csrf}, 403 /* operator: admin needed */}} {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/subclouds", strings.NewReader(body))
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("POST /v1/subclouds with cookie, headers %v = %d %s; want %d", tc.hdr, resp.StatusCode, msg, tc.want)
		}
		if tc.hdr == nil && !strings.Contains(string(msg), "CSRF") {
			t.Errorf("refusal without CSRF says %s", msg)
		}
	}

	// With the right CSRF token a cookie-authenticated write goes through.
	req, _ := http.NewRequest(http.MethodPut, base+"/v1/users/ops/password", strings.NewReader(`{"password":"operator-pass-2"}`))
	req.Header.Set(auth.CSRFHeader, csrf)
	if resp, err := b.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Errorf("PUT own password with cookie and CSRF = %v, %v; want 204", resp.StatusCode, err)
	}

	// Logout needs the CSRF token, then revokes the session.
	if resp, _ := post(t, b, base+"/ui/logout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logout without CSRF = %d; want 403", resp.StatusCode)
	}
	if resp, _ := post(t, b, base+"/ui/logout", url.Values{"csrf_token": {csrf}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("logout = %d; want 303", resp.StatusCode)
	}
	stale := browser(t, f.c)
	u, _ := url.Parse(base)
	stale.Jar.SetCookies(u, []*http.Cookie{session})
	if resp, _ := get(t, stale, base+"/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the old session after logout = %d; want a redirect to login", resp.StatusCode)
	}
	evs, _, _ := f.c.Shell().Events.Events(ctx, rest.ListOptions{Limit: 50, Filters: map[string]string{"type": "audit"}})
	var actions []string
	for _, e := range evs {
		if strings.HasPrefix(e.Action, "ui") {
			actions = append(actions, e.User+" "+e.Action+" "+e.Result)
		}
	}
	if got := strings.Join(actions, "; "); got != "ops uiLogout ok; ops uiLogin ok; ops uiLogin unauthenticated" {
		t.Errorf("dashboard audit events (newest first) = %s", got)
	}
}

// session returns a cookie-jar client holding a dashboard session of a new
// user with role, and the session's CSRF token from a page.
func session(t *testing.T, f fleet, name string, role auth.Role) (*http.Client, string) {
	t.Helper()
	ctx := context.Background()
	pw := "password-of-" + name
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: name, Role: role, Password: pw}, nil); err != nil {
		t.Fatal(err)
	}
	var it auth.IssuedToken
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: name, Password: pw}, &it); err != nil {
		t.Fatal(err)
	}
	b := browser(t, f.c)
	u, _ := url.Parse(f.c.Shell().URL())
	b.Jar.SetCookies(u, []*http.Cookie{{Name: auth.SessionCookie, Value: it.Token, Path: "/"}})
	_, page := get(t, b, f.c.Shell().URL()+"/ui/alarms")
	m := regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the alarms page:\n%s", page)
	}
	return b, m[1]
}

func call(t *testing.T, b *http.Client, method, u, csrf string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	if csrf != "" {
		req.Header.Set(auth.CSRFHeader, csrf)
	}
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}

// The alarm banner and the alarms page at central: the banner counts
// central's alarms, the page is strict and role-aware, and the calls its
// buttons make (acknowledge, clear) work with the session cookie and CSRF
// token for an operator and are refused for a reader.
func TestDashboardAlarms(t *testing.T) {
	f := startCentral(t)
	ctx := context.Background()
	base := f.c.Shell().URL()
	if resp, _ := get(t, browser(t, f.c), base+"/ui/alarms"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("GET /ui/alarms without a session = %d %s; want 303 to /ui/login", resp.StatusCode, resp.Header.Get("Location"))
	}
	var a faultmgr.Alarm
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/alarms", nil, server.RaiseRequest{AlarmID: "280.001", EntityInstanceID: "subcloud=site-q"}, &a); err != nil {
		t.Fatal(err)
	}
	ops, opsCSRF := session(t, f, "ops", auth.Operator)
	viewer, viewerCSRF := session(t, f, "viewer", auth.Reader)

	for _, path := range []string{"/", "/ui/alarms"} {
		resp, page := get(t, ops, base+path)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s = %d, CSP %q", path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
		}
		if !strings.Contains(page, `data-alarm-count="critical">1<`) {
			t.Errorf("GET %s: the banner does not count the critical alarm", path)
		}
	}
	_, page := get(t, ops, base+"/ui/alarms")
	if !strings.Contains(page, "<th>Site</th>") || !strings.Contains(page, "<th>Actions</th>") {
		t.Errorf("central's alarms page for an operator lacks the Site or Actions column")
	}
	if _, page := get(t, viewer, base+"/ui/alarms"); strings.Contains(page, "<th>Actions</th>") {
		t.Errorf("a reader's alarms page has an Actions column")
	}

	// What the page's script reads, with the session cookie.
	if code, body := call(t, viewer, http.MethodGet, base+"/v1/alarms/summary", ""); code != 200 || !strings.Contains(body, `"critical":1`) {
		t.Errorf("summary with a reader's cookie = %d %s", code, body)
	}
	if code, body := call(t, viewer, http.MethodGet, base+"/v1/alarms?suppressed=false&limit=50&site=", ""); code != 200 || !strings.Contains(body, a.UUID) {
		t.Errorf("central's own alarms with a reader's cookie = %d %s", code, body)
	}
	// What its buttons do.
	ack := base + "/v1/alarms/" + a.UUID + "/ack"
	for _, tc := range []struct {
		who             string
		b               *http.Client
		method, u, csrf string
		want            int
	}{
		{"reader", viewer, http.MethodPost, ack, viewerCSRF, http.StatusForbidden},
		{"reader", viewer, http.MethodDelete, base + "/v1/alarms/" + a.UUID, viewerCSRF, http.StatusForbidden},
		{"operator without CSRF", ops, http.MethodPost, ack, "", http.StatusForbidden},
		{"operator with another session's CSRF", ops, http.MethodPost, ack, viewerCSRF, http.StatusForbidden},
		{"operator", ops, http.MethodPost, ack, opsCSRF, http.StatusOK},
	} {
		if code, body := call(t, tc.b, tc.method, tc.u, tc.csrf); code != tc.want {
			t.Errorf("%s: %s %s = %d %s; want %d", tc.who, tc.method, tc.u, code, body, tc.want)
		}
	}
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/alarms/"+a.UUID, nil, nil, &a); err != nil || a.AckedBy != "ops" {
		t.Errorf("after the operator's ack: acked_by %q, %v; want ops", a.AckedBy, err)
	}
	if code, body := call(t, ops, http.MethodDelete, base+"/v1/alarms/"+a.UUID, opsCSRF); code != http.StatusNoContent {
		t.Errorf("clear with the operator's cookie and CSRF = %d %s; want 204", code, body)
	}
	if _, page := get(t, ops, base+"/"); !strings.Contains(page, `data-alarm-count="critical">0<`) {
		t.Error("the banner still counts the cleared alarm")
	}
}

// The fleet view at a real central: /ui/fleet.json filters and counts the
// registry and follows a change at once (the stream's head moves); a
// relayed action without the CSRF token is refused at central; once the
// session has ended, a write with the cookie and its old CSRF token is
// refused and changes nothing, and the pages send the browser to log in.
func TestDashboardFleetView(t *testing.T) {
	f := startCentral(t)
	ctx := context.Background()
	for _, name := range []string{"site-a", "site-b", "other-c"} {
		if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{Name: name, Shape: inventory.Simplex}, nil); err != nil {
			t.Fatal(err)
		}
	}
	b, csrf := session(t, f, "boss", auth.Admin)
	base := f.c.Shell().URL()
	view := func(q string) (v struct {
		Counts  map[string]int `json:"counts"`
		Matched int            `json:"matched"`
		Rows    []struct {
			Name, Status, Sync string
		} `json:"rows"`
	}) {
		t.Helper()
		resp, body := get(t, b, base+"/ui/fleet.json"+q)
		if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &v) != nil {
			t.Fatalf("fleet.json%s = %d %s", q, resp.StatusCode, body)
		}
		return v
	}
	if v := view("?q=site-"); v.Matched != 2 || v.Rows[0].Name != "site-a" || v.Rows[0].Status != "offline" || v.Rows[0].Sync != "unknown" || v.Counts["offline"] != 3 {
		t.Errorf("fleet.json?q=site- = %+v", v)
	}
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{Name: "site-d", Shape: inventory.Duplex}, nil); err != nil {
		t.Fatal(err)
	}
	if v := view("?q=site-"); v.Matched != 3 || v.Counts["offline"] != 4 {
		t.Errorf("after creating site-d: %+v", v)
	}

	// A relayed host action without the CSRF token: refused by central.
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/subclouds/site-a/api/v1/hosts/controller-0/action", strings.NewReader(`{"action":"lock"}`))
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(msg), "CSRF") {
		t.Errorf("relayed action without CSRF = %d %s; want 403", resp.StatusCode, msg)
	}

	// The session ends (revoked, as at expiry): no write, login instead.
	var toks rest.List[auth.Token]
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/tokens", url.Values{"user": {"boss"}}, nil, &toks); err != nil || len(toks.Items) == 0 {
		t.Fatalf("boss's tokens: %v %v", toks.Items, err)
	}
	for _, tok := range toks.Items {
		if err := f.admin.Do(ctx, http.MethodDelete, "/v1/tokens/"+tok.ID, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	req, _ = http.NewRequest(http.MethodPost, base+"/v1/subclouds", strings.NewReader(`{"name":"site-late","shape":"simplex"}`))
	req.Header.Set(auth.CSRFHeader, csrf)
	if resp, err := b.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a write with an ended session = %v, %v; want 401", resp.StatusCode, err)
	}
	if _, err := f.c.Subclouds.Subcloud(ctx, "site-late"); err == nil {
		t.Error("a write with an ended session created site-late")
	}
	for _, p := range []string{"/", "/ui/sites/site-a", "/ui/patching"} {
		if resp, _ := get(t, b, base+p); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
			t.Errorf("GET %s with an ended session = %d; want 303 to /ui/login", p, resp.StatusCode)
		}
	}
	if resp, _ := get(t, b, base+"/ui/fleet.json"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("fleet.json with an ended session = %d; want 401", resp.StatusCode)
	}
}
