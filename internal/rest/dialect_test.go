package rest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

var errTeapot = errors.New("teapot")

// A dialect route: its errors take the dialect's shape (and status, where
// the dialect says), headers set by handlers reach the client, the audit
// hook sees the outcome, and server errors keep their detail to the log.
func TestDialectRoutes(t *testing.T) {
	var audited []string
	s, err := rest.New(rest.Config{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
		Audit: func(r *http.Request, rt rest.Route, status int, err error) {
			audited = append(audited, fmt.Sprintf("%s %d %v", rt.Op, status, err != nil))
		}})
	if err != nil {
		t.Fatal(err)
	}
	d := &rest.Dialect{Name: "nova",
		Status: func(err error) int {
			if errors.Is(err, errTeapot) {
				return http.StatusTeapot
			}
			return 0
		},
		WriteError: func(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
			rest.WriteJSON(w, status, map[string]any{"fault": map[string]any{"code": status, "message": msg}})
		}}
	deny := func(r *http.Request) (*http.Request, error) { return nil, errs.Wrapf(errs.Forbidden, "no") }
	s.HandleDialect(d, "ok", http.MethodPost, "/x/ok", nil, func(r *http.Request) (int, any, error) {
		rest.SetHeader(r.Context(), "X-Subject-Token", "secret")
		return http.StatusAccepted, map[string]string{"a": "b"}, nil
	})
	s.HandleDialect(d, "missing", http.MethodGet, "/x/missing", nil, func(r *http.Request) (int, any, error) {
		return 0, nil, errs.Wrapf(errs.NotFound, "no such thing")
	})
	s.HandleDialect(d, "teapot", http.MethodGet, "/x/teapot", nil, func(r *http.Request) (int, any, error) {
		return 0, nil, errTeapot
	})
	s.HandleDialect(d, "broken", http.MethodGet, "/x/broken", nil, func(r *http.Request) (int, any, error) {
		return 0, nil, errors.New("disk on fire")
	})
	s.HandleDialect(d, "guarded", http.MethodDelete, "/x/guarded", deny, func(r *http.Request) (int, any, error) {
		return http.StatusNoContent, nil, nil
	})
	for _, rt := range s.Routes() {
		if rt.Dialect != "nova" || rt.Public != (rt.Op != "guarded") {
			t.Errorf("route %s: dialect %q public %v", rt.Op, rt.Dialect, rt.Public)
		}
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"POST", "/x/ok", 202, `{"a":"b"}`},
		{"GET", "/x/missing", 404, `{"fault":{"code":404,"message":"no such thing"}}`},
		{"GET", "/x/teapot", 418, `{"fault":{"code":418,"message":"teapot"}}`},
		{"GET", "/x/broken", 500, `{"fault":{"code":500,"message":"internal error (request `},
		{"DELETE", "/x/guarded", 403, `{"fault":{"code":403,"message":"no"}}`},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var raw json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&raw)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.HasPrefix(string(raw), tc.body) {
			t.Errorf("%s %s = %d %s; want %d %s", tc.method, tc.path, resp.StatusCode, raw, tc.status, tc.body)
		}
		if tc.path == "/x/ok" && resp.Header.Get("X-Subject-Token") != "secret" {
			t.Errorf("SetHeader did not reach the response: %v", resp.Header)
		}
	}
	if want := []string{"ok 202 false", "guarded 403 true"}; fmt.Sprint(audited) != fmt.Sprint(want) {
		t.Errorf("audited %v; want %v", audited, want)
	}
}

func TestDialectNeedsAnErrorWriter(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("HandleDialect without an error writer did not panic")
		}
	}()
	newServer(t).HandleDialect(&rest.Dialect{Name: "x"}, "op", http.MethodGet, "/x", nil, nil)
}
