package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sealed"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

// hookTarget records signed deliveries.
type hookTarget struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []webhook.Delivery
	raw []string
	bad []error
	key string
}

func newHookTarget(t *testing.T) *hookTarget {
	h := &hookTarget{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if err := webhook.Verify(h.key, r.Header, body, time.Now(), 5*time.Minute); err != nil {
			h.bad = append(h.bad, err)
		}
		var d webhook.Delivery
		_ = json.Unmarshal(body, &d)
		h.got, h.raw = append(h.got, d), append(h.raw, string(body))
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookTarget) deliveries() ([]webhook.Delivery, []error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhook.Delivery(nil), h.got...), append([]error(nil), h.bad...)
}

func TestWebhookAPI(t *testing.T) {
	d, logs := start(t)
	ctx := context.Background()
	admin := servertest.Client(t, d, servertest.AdminToken(t, d))
	target := newHookTarget(t)

	var created webhook.Created
	req := webhook.CreateRequest{URL: target.srv.URL + "/petrel", Description: "alerting relay",
		Filter: &webhook.Filter{Severities: []faultmgr.Severity{faultmgr.Critical}, AlarmIDs: []string{"200."}}}
	if err := admin.Do(ctx, http.MethodPost, "/v1/webhooks", nil, req, &created); err != nil {
		t.Fatal(err)
	}
	target.mu.Lock()
	target.key = created.Secret
	target.mu.Unlock()
	w := created.Webhook
	if created.Secret == "" || w.ID == "" || w.CreatedBy != "admin" || !w.Enabled || w.Status.State != webhook.StateOK ||
		len(w.Filter.Types) != 2 || w.Description != "alerting relay" {
		t.Errorf("created = %+v", created)
	}
	// A critical 200.x alarm is delivered, signed; a major one is not.
	var a faultmgr.Alarm
	if err := admin.Do(ctx, http.MethodPost, "/v1/alarms", nil, server.RaiseRequest{AlarmID: "200.010", EntityInstanceID: "host=worker-1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, http.MethodPost, "/v1/alarms", nil, server.RaiseRequest{AlarmID: "200.004", EntityInstanceID: "host=worker-1"}, &a); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, bad := target.deliveries()
		if len(bad) > 0 {
			t.Fatalf("deliveries that do not verify: %v", bad)
		}
		if len(got) == 1 && got[0].Event != nil && got[0].Event.AlarmID == "200.004" && got[0].AlarmUUID == a.UUID {
			break
		}
		if len(got) > 1 || time.Now().After(deadline) {
			t.Fatalf("deliveries = %+v; want the 200.004 set only", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A test delivery.
	var res webhook.TestResult
	if err := admin.Do(ctx, http.MethodPost, "/v1/webhooks/"+w.ID+"/test", nil, nil, &res); err != nil || !res.OK || res.StatusCode != 200 {
		t.Errorf("test = %+v, %v", res, err)
	}
	// Show and list carry the status, never the secret.
	var shown webhook.Webhook
	var raw, rawList []byte
	if err := admin.Do(ctx, http.MethodGet, "/v1/webhooks/"+w.ID, nil, nil, &raw); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(raw, &shown)
	if err := admin.Do(ctx, http.MethodGet, "/v1/webhooks", nil, nil, &rawList); err != nil {
		t.Fatal(err)
	}
	var list rest.List[webhook.Webhook]
	_ = json.Unmarshal(rawList, &list)
	if len(list.Items) != 1 || list.Items[0].ID != w.ID || shown.URL != req.URL {
		t.Errorf("list = %s; show = %s", rawList, raw)
	}
	// Disable, then delete.
	off := false
	if err := admin.Do(ctx, http.MethodPatch, "/v1/webhooks/"+w.ID, nil, webhook.UpdateRequest{Enabled: &off}, &shown); err != nil ||
		shown.Enabled || shown.Status.State != webhook.StateDisabled {
		t.Errorf("disable = %+v, %v", shown, err)
	}
	if err := admin.Do(ctx, http.MethodPatch, "/v1/webhooks/"+w.ID, nil, map[string]any{"filter": map[string]any{"types": []string{"loud"}}}, nil); apiErr(t, err).Field != "filter.types" {
		t.Errorf("patch a bad filter = %v; want 400 naming filter.types", err)
	}
	if err := admin.Do(ctx, http.MethodDelete, "/v1/webhooks/"+w.ID, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, http.MethodGet, "/v1/webhooks/"+w.ID, nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("get after delete = %v; want 404", err)
	}
	// The secret is nowhere: not in show or list, the log, the audit trail
	// or the store (sealed there).
	var audit rest.List[faultmgr.Event]
	_ = admin.Do(ctx, http.MethodGet, "/v1/events", map[string][]string{"type": {"audit"}}, nil, &audit)
	auditJSON, _ := json.Marshal(audit)
	if !strings.Contains(string(auditJSON), "createWebhook") {
		t.Errorf("no audit event for createWebhook: %s", auditJSON)
	}
	dbFile, _ := os.ReadFile(filepath.Join(d.DataDir(), server.DatabaseFile))
	wal, _ := os.ReadFile(filepath.Join(d.DataDir(), server.DatabaseFile+"-wal"))
	for what, text := range map[string]string{"show": string(raw), "list": string(rawList), "log": logs.String(),
		"audit events": string(auditJSON), "database": string(dbFile) + string(wal)} {
		if strings.Contains(text, created.Secret) {
			t.Errorf("the %s holds the webhook secret", what)
		}
	}
	if fi, err := os.Stat(filepath.Join(d.DataDir(), sealed.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("sealing key: %v; want mode 0600", err)
	}
}

func TestWebhookBadInput(t *testing.T) {
	d, _ := start(t)
	ctx := context.Background()
	admin := servertest.Client(t, d, servertest.AdminToken(t, d))
	for _, tc := range []struct {
		name, field string
		body        any
	}{
		{"metadata address", "url", webhook.CreateRequest{URL: "http://169.254.169.254/latest/meta-data/"}},
		{"mapped metadata", "url", webhook.CreateRequest{URL: "http://[::ffff:169.254.169.254]/"}},
		{"unspecified", "url", webhook.CreateRequest{URL: "http://0.0.0.0:9000/"}},
		{"multicast", "url", webhook.CreateRequest{URL: "http://239.1.2.3/"}},
		{"link-local v6", "url", webhook.CreateRequest{URL: "http://[fe80::1]:80/"}},
		{"not http", "url", webhook.CreateRequest{URL: "gopher://127.0.0.1/"}},
		{"user info", "url", webhook.CreateRequest{URL: "https://u:p@127.0.0.1/"}},
		{"no url", "url", webhook.CreateRequest{}},
		{"long url", "url", webhook.CreateRequest{URL: "https://127.0.0.1/" + strings.Repeat("x", 2100)}},
		{"bad severity", "filter.severities", map[string]any{"url": "http://127.0.0.1:1/", "filter": map[string]any{"severities": []string{"loud"}}}},
		{"bad alarm id", "filter.alarm_ids", map[string]any{"url": "http://127.0.0.1:1/", "filter": map[string]any{"alarm_ids": []string{"2x0."}}}},
		{"bad type", "filter.types", map[string]any{"url": "http://127.0.0.1:1/", "filter": map[string]any{"types": []string{"everything"}}}},
		{"bad site", "filter.sites", map[string]any{"url": "http://127.0.0.1:1/", "filter": map[string]any{"sites": []string{"Site 1"}}}},
		{"unknown field", "secret", map[string]any{"url": "http://127.0.0.1:1/", "secret": "mine"}},
	} {
		err := admin.Do(ctx, http.MethodPost, "/v1/webhooks", nil, tc.body, nil)
		if ce := apiErr(t, err); ce.Status != 400 || ce.Field != tc.field {
			t.Errorf("%s: %d %s field %q (%s); want 400 naming %s", tc.name, ce.Status, ce.Code, ce.Field, ce.Message, tc.field)
		}
	}
	var list rest.List[webhook.Webhook]
	if err := admin.Do(ctx, http.MethodGet, "/v1/webhooks", nil, nil, &list); err != nil || len(list.Items) != 0 {
		t.Errorf("webhooks after bad input = %d, %v; want none", len(list.Items), err)
	}
	if err := admin.Do(ctx, http.MethodDelete, "/v1/webhooks/nope", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("delete unknown = %v; want 404", err)
	}
}

func TestWebhooksNeedAdmin(t *testing.T) {
	d, _ := start(t)
	ctx := context.Background()
	admin := servertest.Client(t, d, servertest.AdminToken(t, d))
	var c webhook.Created
	if err := admin.Do(ctx, http.MethodPost, "/v1/webhooks", nil, webhook.CreateRequest{URL: "http://127.0.0.1:9/"}, &c); err != nil {
		t.Fatal(err)
	}
	for _, u := range []auth.CreateUserRequest{{Name: "olga", Role: auth.Operator, Password: "operator-pass-1"}, {Name: "rita", Role: auth.Reader, Password: "reader-password-1"}} {
		if err := admin.Do(ctx, http.MethodPost, "/v1/users", nil, u, nil); err != nil {
			t.Fatal(err)
		}
		cl := login(t, d, u.Name, u.Password)
		on := true
		for _, call := range []struct {
			method, path string
			body         any
		}{
			{http.MethodPost, "/v1/webhooks", webhook.CreateRequest{URL: "http://127.0.0.1:9/"}},
			{http.MethodPatch, "/v1/webhooks/" + c.Webhook.ID, webhook.UpdateRequest{Enabled: &on}},
			{http.MethodDelete, "/v1/webhooks/" + c.Webhook.ID, nil},
			{http.MethodPost, "/v1/webhooks/" + c.Webhook.ID + "/test", nil},
		} {
			err := cl.Do(ctx, call.method, call.path, nil, call.body, nil)
			if ce := apiErr(t, err); ce.Status != 403 {
				t.Errorf("%s %s %s = %d %s; want 403", u.Role, call.method, call.path, ce.Status, ce.Code)
			}
		}
		var w webhook.Webhook
		if err := cl.Do(ctx, http.MethodGet, "/v1/webhooks/"+c.Webhook.ID, nil, nil, &w); err != nil || w.ID != c.Webhook.ID {
			t.Errorf("%s GET webhook = %v", u.Role, err)
		}
	}
	var list rest.List[webhook.Webhook]
	if err := admin.Do(ctx, http.MethodGet, "/v1/webhooks", nil, nil, &list); err != nil || len(list.Items) != 1 {
		t.Errorf("webhooks after refused calls = %d, %v; want 1", len(list.Items), err)
	}
}

func TestWebhookDenyListFromConfig(t *testing.T) {
	cfg := servertest.Shell(t)
	cfg.Webhooks = server.WebhookConfig{Deny: []string{"127.0.0.0/8"}}
	s, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := shell{s}
	servertest.Start(t, d)
	admin := servertest.Client(t, d, servertest.AdminToken(t, d))
	err = admin.Do(context.Background(), http.MethodPost, "/v1/webhooks", nil, webhook.CreateRequest{URL: "http://127.0.0.1:9/"}, nil)
	if ce := apiErr(t, err); ce.Status != 400 || ce.Field != "url" || !strings.Contains(ce.Message, "127.0.0.0/8") {
		t.Errorf("create a loopback webhook under deny 127.0.0.0/8 = %d %q; want 400 naming the range", ce.Status, ce.Message)
	}
	cfg.Webhooks = server.WebhookConfig{Allow: []string{"not-a-cidr"}}
	if _, err := server.New(context.Background(), cfg); err == nil {
		t.Error("server.New accepted webhooks.allow: [not-a-cidr]")
	}
}
