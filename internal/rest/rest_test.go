package rest_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("wrapped: %w", errs.NotFound), 404, "not_found"},
		{errs.Field("name", "bad"), 400, "invalid_argument"},
		{errs.New(errs.Conflict, "exists"), 409, "conflict"},
		{errs.InvalidTransition, 409, "invalid_transition"},
		{errs.Unauthenticated, 401, "unauthenticated"},
		{errs.Forbidden, 403, "permission_denied"},
		{errs.NotLeader, 503, "not_leader"},
		{errs.RateLimited, 429, "rate_limited"},
		{&http.MaxBytesError{Limit: 1}, 413, "payload_too_large"},
		{errors.New("disk on fire"), 500, "internal"},
	} {
		status, code := rest.Classify(tc.err)
		if status != tc.status || code != tc.code {
			t.Errorf("Classify(%v) = %d %s; want %d %s", tc.err, status, code, tc.status, tc.code)
		}
		if k := errs.FromCode(code); code != "internal" && !errors.Is(tc.err, k) && tc.code != "payload_too_large" {
			t.Errorf("FromCode(%s) = %v does not match %v", code, k, tc.err)
		}
	}
}

func newServer(t *testing.T) *rest.Server {
	t.Helper()
	s, err := rest.New(rest.Config{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRouteWithoutGuardPanics(t *testing.T) {
	s := newServer(t)
	defer func() {
		if recover() == nil {
			t.Error("Handle with a nil guard did not panic")
		}
	}()
	s.Handle("x", http.MethodGet, "/x", nil, func(*http.Request) (int, any, error) { return 200, nil, nil })
}

func TestDecodeJSONAndStatus(t *testing.T) {
	s := newServer(t)
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
		Tags  []string
	}
	s.HandlePublic("echo", http.MethodPost, "/echo", func(r *http.Request) (int, any, error) {
		var b body
		if err := rest.DecodeJSON(r, &b); err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, b, nil
	})
	for _, tc := range []struct {
		in     string
		status int
		want   string
	}{
		{`{"name":"a","count":2}`, 201, `"name":"a"`},
		{`{"name":"a","count":"two"}`, 400, `"field":"count"`},
		{`{"name":"a","extra":1}`, 400, `"field":"extra"`},
		{`{"name":`, 400, "malformed JSON"},
		{`{"name":"a"}{"name":"b"}`, 400, "unexpected data"},
		{``, 400, "empty"},
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/echo", strings.NewReader(tc.in)))
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("POST %q = %d %s; want %d containing %s", tc.in, w.Code, w.Body, tc.status, tc.want)
		}
		if w.Header().Get("X-Request-Id") == "" {
			t.Errorf("POST %q: no X-Request-Id", tc.in)
		}
	}
}

func TestRequestIDFromCaller(t *testing.T) {
	s := newServer(t)
	s.HandlePublic("id", http.MethodGet, "/id", func(r *http.Request) (int, any, error) {
		return 200, rest.RequestID(r.Context()), nil
	})
	for in, keep := range map[string]bool{"relay-0123456789": true, "bad id with spaces": false, "x": false} {
		req := httptest.NewRequest(http.MethodGet, "/id", nil)
		req.Header.Set("X-Request-Id", in)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if got := w.Header().Get("X-Request-Id") == in; got != keep {
			t.Errorf("X-Request-Id %q kept = %v; want %v", in, got, keep)
		}
	}
}

func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		query, field string
	}{
		{"limit=5&role=admin", ""},
		{"limit=abc", "limit"},
		{"limit=1001", "limit"},
		{"page_token=!!!", "page_token"},
		{"limit=%zz", "-"},
		{"color=red", "color"},
		{"role=a&role=b", "role"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/x?"+tc.query, nil)
		_, err := rest.ParseList(r, "role")
		var fe *errs.FieldError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("ParseList(%s) = %v; want ok", tc.query, err)
		case tc.field == "-" && !errors.Is(err, errs.Invalid):
			t.Errorf("ParseList(%s) = %v; want invalid argument", tc.query, err)
		case tc.field != "" && tc.field != "-" && (!errors.As(err, &fe) || fe.Field != tc.field):
			t.Errorf("ParseList(%s) = %v; want an error naming %s", tc.query, err, tc.field)
		}
	}
	tok := rest.EncodePageToken("host-07")
	r := httptest.NewRequest(http.MethodGet, "/x?page_token="+tok, nil)
	if opts, err := rest.ParseList(r); err != nil || opts.After != "host-07" || opts.Limit != rest.DefaultLimit {
		t.Errorf("ParseList(page token) = %+v, %v", opts, err)
	}
}

// A streamed route has its own body cap; others keep the server's.
func TestHandleStreamBodyCap(t *testing.T) {
	s := newServer(t)
	read := func(r *http.Request) (int, any, error) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return 0, nil, errs.Wrapf(errs.TooLarge, "over %d bytes", mbe.Limit)
			}
			return 0, nil, err
		}
		return http.StatusOK, map[string]int64{"n": n}, nil
	}
	allow := func(r *http.Request) (*http.Request, error) { return r, nil }
	s.HandleStream("upload", http.MethodPut, "/upload", 3<<20, allow, read)
	s.Handle("small", http.MethodPut, "/small", allow, read)
	big := strings.Repeat("x", 2<<20)
	for _, tc := range []struct {
		path   string
		status int
	}{{"/upload", 200}, {"/small", 413}} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodPut, tc.path, strings.NewReader(big)))
		if w.Code != tc.status {
			t.Errorf("PUT 2 MiB to %s = %d; want %d", tc.path, w.Code, tc.status)
		}
	}
	if rt := s.Routes(); rt[0].MaxBody != 3<<20 || rt[1].MaxBody != 0 {
		t.Errorf("routes = %+v", rt)
	}
	defer func() {
		if recover() == nil {
			t.Error("HandleStream with a nil guard did not panic")
		}
	}()
	s.HandleStream("x", http.MethodPut, "/x", 1, nil, read)
}
