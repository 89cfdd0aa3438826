package faultdb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

func TestConformanceWebhookStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		st, err := faultdb.Open(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 11, 25, 10, 0, 0, 123456000, time.UTC)
		f, _ := webhook.Filter{Severities: []faultmgr.Severity{faultmgr.Critical}, AlarmIDs: []string{"200."}, Sites: []string{"site-1"}}.Validate()
		var ids []string
		for i := range 5 {
			id, _ := uuid.NewV7()
			ids = append(ids, id.String())
			w := webhook.Webhook{ID: id.String(), URL: fmt.Sprintf("https://receiver-%d.example/hook", i), Description: "d",
				Filter: f, Enabled: i != 3, CreatedBy: "admin", CreatedAt: t0, Epoch: st.Epoch(), Status: webhook.Status{Cursor: uint64(10 + i)}}
			if err := st.CreateWebhook(ctx, w, []byte{1, 2, byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.Webhook(ctx, ids[1])
		if err != nil {
			t.Fatal(err)
		}
		if got.URL != "https://receiver-1.example/hook" || !got.Enabled || got.CreatedBy != "admin" || !got.CreatedAt.Equal(t0) ||
			got.Status.Cursor != 11 || got.Epoch != st.Epoch() || fmt.Sprint(got.Filter) != fmt.Sprint(f) {
			t.Errorf("Webhook() = %+v", got)
		}
		if sec, err := st.WebhookSecret(ctx, ids[2]); err != nil || !bytes.Equal(sec, []byte{1, 2, 2}) {
			t.Errorf("WebhookSecret() = %v, %v", sec, err)
		}
		if _, err := st.Webhook(ctx, "nope"); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("Webhook(unknown) = %v; want ErrNotFound", err)
		}
		if _, err := st.WebhookSecret(ctx, "nope"); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("WebhookSecret(unknown) = %v; want ErrNotFound", err)
		}
		// Oldest first, paged.
		var listed []string
		opts := page.Options{Limit: 2}
		for {
			ws, next, err := st.Webhooks(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range ws {
				listed = append(listed, w.ID)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
		if fmt.Sprint(listed) != fmt.Sprint(ids) {
			t.Errorf("paged list = %v; want %v", listed, ids)
		}
		if n, err := st.CountWebhooks(ctx); err != nil || n != 5 {
			t.Errorf("CountWebhooks() = %d, %v", n, err)
		}
		// Update keeps the status; status saves keep the settings.
		got.Enabled, got.Description = false, "paused"
		got.Filter, _ = webhook.Filter{Types: []faultmgr.EventType{faultmgr.EventAudit}}.Validate()
		if err := st.UpdateWebhook(ctx, got); err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Minute)
		status := webhook.Status{Cursor: 42, Delivered: 7, Missed: 1, ConsecutiveFailures: 3, LastAttemptAt: &at,
			LastSuccessAt: &t0, LastError: string(bytes.Repeat([]byte("e"), 5000)), LastErrorAt: &at}
		if err := st.SaveWebhookStatus(ctx, ids[1], st.Epoch(), status); err != nil {
			t.Fatal(err)
		}
		after, _ := st.Webhook(ctx, ids[1])
		if after.Enabled || after.Description != "paused" || len(after.Filter.Types) != 1 || after.Filter.Types[0] != faultmgr.EventAudit {
			t.Errorf("after update: %+v", after)
		}
		s := after.Status
		if s.Cursor != 42 || s.Delivered != 7 || s.Missed != 1 || s.ConsecutiveFailures != 3 || !s.LastAttemptAt.Equal(at) ||
			!s.LastSuccessAt.Equal(t0) || len(s.LastError) != 1024 || !s.LastErrorAt.Equal(at) {
			t.Errorf("after status save: %+v", s)
		}
		if err := st.UpdateWebhook(ctx, webhook.Webhook{ID: "nope"}); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("UpdateWebhook(unknown) = %v; want ErrNotFound", err)
		}
		if err := st.SaveWebhookStatus(ctx, "gone", st.Epoch(), status); err != nil {
			t.Errorf("SaveWebhookStatus(deleted) = %v; want nil", err)
		}
		// The floor: the lowest cursor of enabled webhooks (ids[1] and ids[3] are disabled).
		if floor, ok, err := st.WebhookFloor(ctx); err != nil || !ok || floor != 10 {
			t.Errorf("WebhookFloor() = %d, %v, %v; want 10", floor, ok, err)
		}
		if err := st.DeleteWebhook(ctx, ids[0]); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteWebhook(ctx, ids[0]); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("second DeleteWebhook() = %v; want ErrNotFound", err)
		}
		if floor, ok, _ := st.WebhookFloor(ctx); !ok || floor != 12 {
			t.Errorf("WebhookFloor() after delete = %d, %v; want 12", floor, ok)
		}
		for _, id := range ids[1:] {
			st.DeleteWebhook(ctx, id)
		}
		if _, ok, err := st.WebhookFloor(ctx); ok || err != nil {
			t.Errorf("WebhookFloor() with none = ok %v, %v", ok, err)
		}
	})
}
