package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

// shell adapts a bare daemon shell to servertest.Daemon.
type shell struct{ *server.Server }

func (s shell) Shell() *server.Server { return s.Server }

// syncBuffer collects a daemon's log for inspection.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// start runs a shell with one extra route that fails with internal detail.
func start(t *testing.T) (shell, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg := servertest.Shell(t)
	cfg.Daemon = "central"
	cfg.Logger = slog.New(slog.NewJSONHandler(io.MultiWriter(logs, testWriter{t}), nil))
	s, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := shell{s}
	servertest.Start(t, d)
	return d, logs
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func apiErr(t *testing.T, err error) *client.Error {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v; want an API error", err)
	}
	return ce
}

func TestRoutesMatchOpenAPI(t *testing.T) {
	d, _ := start(t)
	servertest.CheckRoutes(t, d.Spec(), d.REST.Routes())
}

func TestUnauthenticatedAndForbidden(t *testing.T) {
	d, _ := start(t)
	ctx := context.Background()
	admin := servertest.Client(t, d, servertest.AdminToken(t, d))

	// No token, a malformed token, an unknown token: 401.
	for _, tok := range []string{"", "garbage", "pt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		err := servertest.Client(t, d, tok).Do(ctx, http.MethodGet, "/v1/users", nil, nil, nil)
		if ce := apiErr(t, err); ce.Status != 401 || ce.Code != "unauthenticated" {
			t.Errorf("GET /v1/users with token %q = %d %s; want 401 unauthenticated", tok, ce.Status, ce.Code)
		}
	}
	// A reader may read but not write.
	if err := admin.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: "rita", Role: auth.Reader, Password: "reader-password-1"}, nil); err != nil {
		t.Fatal(err)
	}
	rita := login(t, d, "rita", "reader-password-1")
	if err := rita.Do(ctx, http.MethodGet, "/v1/whoami", nil, nil, nil); err != nil {
		t.Errorf("reader GET /v1/whoami = %v; want ok", err)
	}
	err := rita.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: "eve", Role: auth.Admin, Password: "eve-password-123"}, nil)
	if ce := apiErr(t, err); ce.Status != 403 || !errors.Is(err, errs.Forbidden) {
		t.Errorf("reader POST /v1/users = %d %s; want 403 permission_denied", ce.Status, ce.Code)
	}
	if err := admin.Do(ctx, http.MethodGet, "/v1/users/eve", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("GET /v1/users/eve after a refused create = %v; want not found", err)
	}
	// A revoked token is refused at once.
	var who auth.WhoAmI
	if err := rita.Do(ctx, http.MethodGet, "/v1/whoami", nil, nil, &who); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, http.MethodDelete, "/v1/tokens/"+who.TokenID, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := rita.Do(ctx, http.MethodGet, "/v1/whoami", nil, nil, nil); apiErr(t, err).Status != 401 {
		t.Errorf("GET /v1/whoami with a revoked token = %v; want 401", err)
	}
	// Public paths need no token.
	hc := servertest.HTTPClient(t, d)
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := hc.Get(d.URL() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s without a token = %d; want 200", p, resp.StatusCode)
		}
	}
}

func login(t *testing.T, d shell, user, pw string) *client.Client {
	t.Helper()
	var it auth.IssuedToken
	if err := servertest.Client(t, d, "").Do(context.Background(), http.MethodPost, "/v1/login", nil,
		auth.LoginRequest{Username: user, Password: pw}, &it); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return servertest.Client(t, d, it.Token)
}

func TestBadInputChangesNothing(t *testing.T) {
	d, _ := start(t)
	ctx := context.Background()
	tok := servertest.AdminToken(t, d)
	hc := servertest.HTTPClient(t, d)
	post := func(path, body string) (int, rest.ErrorBody) {
		req, _ := http.NewRequest(http.MethodPost, d.URL()+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb rest.ErrorBody
		b, _ := io.ReadAll(resp.Body)
		_ = jsonUnmarshal(b, &eb)
		return resp.StatusCode, eb
	}
	for _, tc := range []struct {
		name, body, field string
		status            int
	}{
		{"malformed", `{"name":"x",`, "", 400},
		{"not an object", `[1,2]`, "", 400},
		{"empty", ``, "", 400},
		{"unknown field", `{"name":"xavier","role":"reader","password":"long-enough-pw","colour":"red"}`, "colour", 400},
		{"wrong type", `{"name":7,"role":"reader","password":"long-enough-pw"}`, "name", 400},
		{"invalid role", `{"name":"xavier","role":"boss","password":"long-enough-pw"}`, "role", 400},
		{"invalid name", `{"name":"X Avier","role":"reader","password":"long-enough-pw"}`, "name", 400},
		{"short password", `{"name":"xavier","role":"reader","password":"short"}`, "password", 400},
		{"trailing data", `{"name":"xavier","role":"reader","password":"long-enough-pw"} {}`, "", 400},
		{"too large", `{"name":"` + strings.Repeat("x", 2<<20) + `"}`, "", 413},
	} {
		status, eb := post("/v1/users", tc.body)
		if status != tc.status || eb.Error.Field != tc.field || eb.Error.RequestID == "" {
			t.Errorf("%s: POST /v1/users = %d field %q (%+v); want %d field %q", tc.name, status, eb.Error.Field, eb.Error, tc.status, tc.field)
		}
	}
	admin := servertest.Client(t, d, tok)
	p, err := admin.List(ctx, "/v1/users", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 1 {
		t.Errorf("users after bad input = %d; want only the bootstrap admin", len(p.Items))
	}
	// Unknown resources, methods and parameters.
	if err := admin.Do(ctx, http.MethodGet, "/v1/users/nobody", nil, nil, nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("GET unknown user = %v; want not_found", err)
	}
	if err := admin.Do(ctx, http.MethodGet, "/v1/no-such-thing", nil, nil, nil); apiErr(t, err).Status != 404 {
		t.Errorf("GET unknown path = %v; want 404", err)
	}
	if err := admin.Do(ctx, http.MethodPatch, "/v1/users", nil, nil, nil); apiErr(t, err).Status != 405 {
		t.Errorf("PATCH /v1/users = %v; want 405", err)
	}
	if _, err := admin.List(ctx, "/v1/users", map[string][]string{"colour": {"red"}}, 0); apiErr(t, err).Field != "colour" {
		t.Errorf("GET /v1/users?colour=red = %v; want 400 naming colour", err)
	}
	if _, err := admin.List(ctx, "/v1/users", map[string][]string{"page_token": {"forged"}}, 0); apiErr(t, err).Field != "page_token" {
		t.Errorf("forged page token = %v; want 400 naming page_token", err)
	}
	if _, err := admin.List(ctx, "/v1/users", map[string][]string{"limit": {"0"}}, 0); apiErr(t, err).Field != "limit" {
		t.Errorf("limit=0 = %v; want 400 naming limit", err)
	}
}

func TestInternalErrorsDoNotLeak(t *testing.T) {
	logs := &syncBuffer{}
	cfg := servertest.Shell(t)
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	s, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.REST.Handle("boom", http.MethodGet, "/v1/boom", s.Auth.Require(auth.Reader), func(*http.Request) (int, any, error) {
		return 0, nil, fmt.Errorf("dial postgres://petrel:hunter2@10.0.0.9/db: connection refused")
	})
	s.REST.Handle("panic", http.MethodGet, "/v1/panic", s.Auth.Require(auth.Reader), func(*http.Request) (int, any, error) {
		panic("secret-panic-detail")
	})
	d := shell{s}
	servertest.Start(t, d)
	tok := servertest.AdminToken(t, d)
	hc := servertest.HTTPClient(t, d)
	for _, path := range []string{"/v1/boom", "/v1/panic"} {
		req, _ := http.NewRequest(http.MethodGet, d.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Errorf("GET %s = %d; want 500", path, resp.StatusCode)
		}
		if bytes.Contains(body, []byte("hunter2")) || bytes.Contains(body, []byte("secret-panic")) || bytes.Contains(body, []byte("10.0.0.9")) {
			t.Errorf("GET %s leaked internal detail: %s", path, body)
		}
		id := resp.Header.Get("X-Request-Id")
		if !bytes.Contains(body, []byte(id)) || !strings.Contains(logs.String(), id) {
			t.Errorf("GET %s: request id %q missing from the body %s or the log", path, id, body)
		}
	}
	if !strings.Contains(logs.String(), "connection refused") || !strings.Contains(logs.String(), "secret-panic-detail") {
		t.Errorf("the log lacks the internal detail of the failures")
	}
}

func TestAuditEventForEveryMutation(t *testing.T) {
	d, _ := start(t)
	ctx := context.Background()
	admin := servertest.Client(t, d, servertest.AdminToken(t, d))
	_ = admin.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: "olga", Role: auth.Operator, Password: "operator-pass-1"}, nil)
	_ = admin.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: "olga", Role: auth.Operator, Password: "operator-pass-1"}, nil) // conflict
	olga := login(t, d, "olga", "operator-pass-1")
	_ = olga.Do(ctx, http.MethodDelete, "/v1/users/admin", nil, nil, nil) // forbidden
	_ = servertest.Client(t, d, "").Do(ctx, http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: "olga", Password: "wrong-password"}, nil)
	_ = admin.Do(ctx, http.MethodDelete, "/v1/users/olga", nil, nil, nil)
	_ = admin.Do(ctx, http.MethodGet, "/v1/users", nil, nil, nil) // reads are not audited

	evs, _, err := d.Events.Events(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"type": "audit"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(evs) - 1; i >= 0; i-- { // oldest first
		e := evs[i]
		if e.Type != faultmgr.EventAudit || e.RequestID == "" || e.Timestamp.IsZero() {
			t.Errorf("audit event %+v lacks type, request id or time", e)
		}
		got = append(got, fmt.Sprintf("%s %s %s %s", e.User, e.Role, e.Action, e.Result))
	}
	want := []string{
		"admin admin login ok", // servertest.AdminToken
		"admin admin createUser ok",
		"admin admin createUser conflict",
		"olga operator login ok",
		"olga operator deleteUser permission_denied",
		"olga - login unauthenticated",
		"admin admin deleteUser ok",
	}
	for i := range want {
		want[i] = strings.Replace(want[i], " - ", "  ", 1)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestBootstrapSecretStaysInItsFile(t *testing.T) {
	d, logs := start(t)
	pwFile := filepath.Join(d.DataDir(), server.AdminPasswordFile)
	fi, err := os.Stat(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %o; want 600", pwFile, fi.Mode().Perm())
	}
	pw, _ := auth.ReadSecretFile(pwFile)
	tok := servertest.AdminToken(t, d)
	admin := servertest.Client(t, d, tok)
	var raw []byte
	_ = admin.Do(context.Background(), http.MethodGet, "/v1/users/admin", nil, nil, &raw)
	resp, err := servertest.HTTPClient(t, d).Get(d.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for what, text := range map[string]string{"log": logs.String(), "user resource": string(raw), "metrics": string(metrics)} {
		if strings.Contains(text, pw) || strings.Contains(text, tok) {
			t.Errorf("the %s contains the admin password or a token", what)
		}
	}
}

func TestRestartKeepsBootstrapAdmin(t *testing.T) {
	cfg := servertest.Shell(t)
	s1, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(cfg.DataDir, server.AdminPasswordFile)
	pw, err := auth.ReadSecretFile(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	s1.Close()
	s2, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if pw2, _ := auth.ReadSecretFile(pwFile); pw2 != pw {
		t.Error("restart rewrote the bootstrap password")
	}
	if _, _, err := s2.Auth.Login(context.Background(), "admin", pw); err != nil {
		t.Errorf("login with the bootstrap password after restart = %v", err)
	}
}

func TestPaging(t *testing.T) {
	d, _ := start(t)
	ctx := context.Background()
	admin := servertest.Client(t, d, servertest.AdminToken(t, d))
	for _, n := range []string{"dave", "bob", "carol", "erin"} {
		if err := admin.Do(ctx, http.MethodPost, "/v1/users", nil, auth.CreateUserRequest{Name: n, Role: auth.Reader, Password: "a-long-password"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	token := ""
	for pages := 0; ; pages++ {
		var page rest.List[auth.User]
		q := map[string][]string{"limit": {"2"}}
		if token != "" {
			q["page_token"] = []string{token}
		}
		if err := admin.Do(ctx, http.MethodGet, "/v1/users", q, nil, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Items) > 2 {
			t.Fatalf("page of %d items with limit 2", len(page.Items))
		}
		for _, u := range page.Items {
			names = append(names, u.Name)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if got := strings.Join(names, ","); got != "admin,bob,carol,dave,erin" {
		t.Errorf("paged users = %s; want admin,bob,carol,dave,erin", got)
	}
	var readers rest.List[auth.User]
	if err := admin.Do(ctx, http.MethodGet, "/v1/users", map[string][]string{"role": {"reader"}}, nil, &readers); err != nil || len(readers.Items) != 4 {
		t.Errorf("GET /v1/users?role=reader = %d users, %v; want 4", len(readers.Items), err)
	}
}

func TestPlainHTTPRefused(t *testing.T) {
	d, _ := start(t)
	resp, err := http.Get("http://" + d.Addr().String() + "/healthz")
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP /healthz answered 200; want TLS only")
		}
	}
}
