package demo_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/servicemgr/demo"
)

func newServer(t *testing.T, cfg demo.Config) *demo.Server {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	s, err := demo.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeRole(t *testing.T, dir string, rf servicemgr.RoleFile) {
	t.Helper()
	b, _ := json.Marshal(rf)
	if err := atomicfile.Write(filepath.Join(dir, demo.RoleFileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// get calls GET path on h and decodes the body of GET /.
func get(t *testing.T, h http.Handler, path string) (int, servicemgr.RoleFile, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var rf servicemgr.RoleFile
	if path == "/" {
		if err := json.Unmarshal(rec.Body.Bytes(), &rf); err != nil {
			t.Fatalf("GET / body %q: %v", rec.Body.String(), err)
		}
	}
	return rec.Code, rf, rec.Body.String()
}

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		file   string // role.json's content; "" for no file
		status int
		want   servicemgr.RoleFile
	}{
		{"active", `{"host":"h1","group":"g","role":"active","epoch":7}`, 200,
			servicemgr.RoleFile{Host: "h1", Group: "g", Role: servicemgr.RoleActive, Epoch: 7}},
		{"standby", `{"host":"h1","group":"g","role":"standby","epoch":7}`, 503,
			servicemgr.RoleFile{Host: "h1", Group: "g", Role: servicemgr.RoleStandby, Epoch: 7}},
		{"missing", "", 503,
			servicemgr.RoleFile{Host: "env-host", Group: "env-group", Role: demo.RoleUnknown}},
		{"garbage", `{"role":`, 503,
			servicemgr.RoleFile{Host: "env-host", Group: "env-group", Role: demo.RoleUnknown}},
		{"bad role", `{"host":"h1","group":"g","role":"leader","epoch":7}`, 503,
			servicemgr.RoleFile{Host: "env-host", Group: "env-group", Role: demo.RoleUnknown}},
		{"host and group from config", `{"role":"active","epoch":3}`, 200,
			servicemgr.RoleFile{Host: "env-host", Group: "env-group", Role: servicemgr.RoleActive, Epoch: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != "" {
				os.WriteFile(filepath.Join(dir, demo.RoleFileName), []byte(tc.file), 0o644)
			}
			s := newServer(t, demo.Config{StateDir: dir, Host: "env-host", Group: "env-group"})
			status, got, _ := get(t, s.Handler(), "/")
			if status != tc.status || got != tc.want {
				t.Errorf("GET / = %d %+v; want %d %+v", status, got, tc.status, tc.want)
			}
			if status, _, body := get(t, s.Handler(), "/healthz"); status != 200 || body != "ok\n" {
				t.Errorf("GET /healthz = %d %q; want 200 \"ok\\n\"", status, body)
			}
		})
	}
}

func TestRoleErrors(t *testing.T) {
	dir := t.TempDir()
	s := newServer(t, demo.Config{StateDir: dir})
	if _, err := s.Role(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Role() without a file: err = %v; want fs.ErrNotExist", err)
	}
	os.WriteFile(filepath.Join(dir, demo.RoleFileName), []byte(`{"role":"primary"}`), 0o644)
	if _, err := s.Role(); !errors.Is(err, demo.ErrBadRoleFile) {
		t.Errorf("Role() with role primary: err = %v; want ErrBadRoleFile", err)
	}
}

func TestOnlyGETOfKnownPaths(t *testing.T) {
	s := newServer(t, demo.Config{})
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodGet, "/other", http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s %s = %d; want %d", tc.method, tc.path, rec.Code, tc.want)
		}
	}
}

// TestAtomicReplacementSeenAtOnce: every request after the agent has
// replaced role.json answers the new role, however fast the changes come
// (same size, same mtime tick).
func TestAtomicReplacementSeenAtOnce(t *testing.T) {
	dir := t.TempDir()
	s := newServer(t, demo.Config{StateDir: dir})
	for epoch := uint64(10); epoch < 60; epoch++ {
		role := servicemgr.RoleActive
		want := http.StatusOK
		if epoch%2 == 1 {
			role, want = servicemgr.RoleStandby, http.StatusServiceUnavailable
		}
		rf := servicemgr.RoleFile{Host: "h", Group: "g", Role: role, Epoch: epoch}
		writeRole(t, dir, rf)
		if status, got, _ := get(t, s.Handler(), "/"); status != want || got != rf {
			t.Fatalf("GET / after writing %+v = %d %+v; want %d and the new role", rf, status, got, want)
		}
	}
	os.Remove(filepath.Join(dir, demo.RoleFileName))
	if status, got, _ := get(t, s.Handler(), "/"); status != 503 || got.Role != demo.RoleUnknown {
		t.Errorf("GET / after removing role.json = %d %+v; want 503 unknown", status, got)
	}
}

// TestGracefulStop: ending the context stops the server within
// ShutdownTimeout, also with an idle keep-alive connection open, and closes
// its listeners.
func TestGracefulStop(t *testing.T) {
	dir := t.TempDir()
	writeRole(t, dir, servicemgr.RoleFile{Host: "h", Group: "g", Role: servicemgr.RoleActive, Epoch: 1})
	s := newServer(t, demo.Config{StateDir: dir})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close() // the connection stays open, idle
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d; want 200", resp.StatusCode)
	}

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve() after cancel = %v; want nil", err)
		}
	case <-time.After(demo.ShutdownTimeout + time.Second):
		t.Fatalf("Serve still running %s after cancel", demo.ShutdownTimeout+time.Second)
	}
	if took := time.Since(start); took > demo.ShutdownTimeout {
		t.Errorf("stop took %s; want at most %s", took, demo.ShutdownTimeout)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("listener %s still accepts after stop", ln.Addr())
	}
}

// TestRunListens: Run listens on every address, including one the host does
// not hold (a floating address before activation, bound with
// IP_FREEBIND), and fails at once on an address in use.
func TestRunListens(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s := newServer(t, demo.Config{Listen: []string{"127.0.0.1:0", busy.Addr().String()}})
	if err := s.Run(t.Context()); err == nil {
		t.Errorf("Run() with an address in use = nil; want an error")
	}

	// 192.0.2.1 (TEST-NET-1) is held by no interface: binding it sends
	// nothing. Run listens on every address before it serves any, so
	// /healthz answering on the loopback one proves both are bound.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s = newServer(t, demo.Config{Listen: []string{
		net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), net.JoinHostPort("192.0.2.1", strconv.Itoa(port))}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/healthz"
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run() = %v before serving", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v after 10 s", url, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v; want nil after cancel", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	lg := slog.New(slog.DiscardHandler)
	for _, cfg := range []demo.Config{
		{Logger: lg},
		{StateDir: "/x"},
		{StateDir: "/x", Logger: lg, Listen: []string{"localhost:80"}},
	} {
		if _, err := demo.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error; want one", cfg)
		}
	}
}
