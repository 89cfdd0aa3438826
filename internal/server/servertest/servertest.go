// Package servertest runs Petrel daemons in tests and checks them against
// their OpenAPI document: every route is described (and nothing else is),
// and every response a test receives matches the documented schema.
package servertest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
)

// Daemon is what central.Central and subcloud.Subcloud offer tests.
type Daemon interface {
	Run(ctx context.Context) error
	Shell() *server.Server
}

// Shell returns a daemon shell configuration for a test: loopback, a fresh
// data directory, logs to t.Log.
func Shell(t testing.TB) server.Config {
	return server.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: Logger(t)}
}

// Logger returns a logger writing to t.Log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Start runs d until the test ends, and waits for it to serve.
func Start(t testing.TB, d Daemon) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon Run() = %v", err)
		}
	})
	select {
	case <-d.Shell().Ready():
	case err := <-done:
		t.Fatalf("daemon exited before serving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not serving after 10 s")
	}
}

// AdminToken logs in as the bootstrap admin and returns the token.
func AdminToken(t testing.TB, d Daemon) string {
	t.Helper()
	pw, err := auth.ReadSecretFile(filepath.Join(d.Shell().DataDir(), server.AdminPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	c := Client(t, d, "")
	var it auth.IssuedToken
	if err := c.Do(context.Background(), http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: "admin", Password: pw}, &it); err != nil {
		t.Fatalf("admin login: %v", err)
	}
	return it.Token
}

// Client returns an API client for d with token, whose every response is
// validated against d's OpenAPI document.
func Client(t testing.TB, d Daemon, token string) *client.Client {
	t.Helper()
	v := NewValidator(t, d.Shell().Spec())
	hc := HTTPClient(t, d)
	hc.Transport = v.Wrap(hc.Transport)
	c, err := client.New(client.Config{URL: d.Shell().URL(), Token: token, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// HTTPClient returns a plain HTTP client trusting d's CA.
func HTTPClient(t testing.TB, d Daemon) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(d.Shell().CACert)
	if err != nil {
		t.Fatal(err)
	}
	return newTLSClient(t, pem)
}

// CheckRoutes fails t unless the OpenAPI document describes exactly the
// registered routes, with the same operation IDs, and marks exactly the
// public routes as needing no credentials. Routes of a foreign dialect (the
// OpenStack-compatible API) are documented by that API, not here.
func CheckRoutes(t *testing.T, spec []byte, routes []rest.Route) {
	t.Helper()
	doc := Load(t, spec)
	documented := map[string]*openapi3.Operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented[method+" "+path] = op
		}
	}
	for _, rt := range routes {
		if rt.Dialect != "" {
			continue
		}
		// gorilla/mux patterns ({path:.*}) are plain parameters in OpenAPI.
		key := rt.Method + " " + muxPattern.ReplaceAllString(rt.Path, "{$1}")
		op, ok := documented[key]
		if !ok {
			t.Errorf("route %s (%s) is not in the OpenAPI document", key, rt.Op)
			continue
		}
		delete(documented, key)
		if op.OperationID != rt.Op {
			t.Errorf("%s: operationId %q; the route's operation is %q", key, op.OperationID, rt.Op)
		}
		// OpenAPI 3.0 cannot express mutual TLS: such operations declare no
		// security requirement and carry x-petrel-auth instead.
		_, certAuth := op.Extensions["x-petrel-auth"]
		public := op.Security != nil && len(*op.Security) == 0 && !certAuth
		if public != rt.Public {
			t.Errorf("%s: documented public=%v; route public=%v", key, public, rt.Public)
		}
	}
	var extra []string
	for k := range documented {
		extra = append(extra, k)
	}
	sort.Strings(extra)
	for _, k := range extra {
		t.Errorf("the OpenAPI document describes %s, which no route serves", k)
	}
}

var muxPattern = regexp.MustCompile(`\{([a-z_]+):[^}]*\}`)

// Load parses and validates an OpenAPI document.
func Load(t testing.TB, spec []byte) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		t.Fatalf("OpenAPI document does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("OpenAPI document is invalid: %v", err)
	}
	return doc
}

// Validator checks responses against an OpenAPI document.
type Validator struct {
	t      testing.TB
	router routers.Router
	mu     sync.Mutex
	seen   map[string]bool // operation ids validated
}

// NewValidator returns a Validator for spec.
func NewValidator(t testing.TB, spec []byte) *Validator {
	t.Helper()
	doc := Load(t, spec)
	doc.Servers = openapi3.Servers{{URL: "/"}}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &Validator{t: t, router: r, seen: map[string]bool{}}
}

// Wrap returns a transport that validates every response it carries.
func (v *Validator) Wrap(base http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		var reqBody []byte
		if req.Body != nil {
			reqBody, _ = io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		resp, err := base.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		v.check(req, reqBody, resp, body)
		return resp, nil
	})
}

func (v *Validator) check(req *http.Request, reqBody []byte, resp *http.Response, body []byte) {
	v.t.Helper()
	r2 := req.Clone(context.Background())
	r2.URL = &url.URL{Path: req.URL.Path, RawQuery: req.URL.RawQuery}
	r2.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := v.router.FindRoute(r2)
	if err != nil {
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			v.t.Errorf("%s %s answered %d but is not in the OpenAPI document: %v", req.Method, req.URL.Path, resp.StatusCode, err)
		}
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: r2, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		out.Options.ExcludeResponseBody = true
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		v.t.Errorf("%s %s -> %d does not match the OpenAPI document: %v\nbody: %s", req.Method, req.URL.Path, resp.StatusCode, err, body)
	}
	v.mu.Lock()
	v.seen[route.Operation.OperationID] = true
	v.mu.Unlock()
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
