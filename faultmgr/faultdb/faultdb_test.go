package faultdb_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

func TestConformanceEventStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		st, err := faultdb.Open(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := range 7 {
			typ := faultmgr.EventAudit
			if i%2 == 1 {
				typ = faultmgr.EventLog
			}
			id, _ := uuid.NewV7()
			ev := faultmgr.Event{UUID: id.String(), Type: typ, User: fmt.Sprintf("u%d", i), Action: "createUser",
				Result: "ok", Timestamp: t0.Add(time.Duration(i) * time.Second), Site: "site-sx"}
			if err := st.AppendEvent(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		// Newest first, paged.
		var users []string
		after := ""
		for {
			page, next, err := st.Events(ctx, rest.ListOptions{Limit: 3, After: after})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page {
				users = append(users, e.User)
			}
			if next == "" {
				break
			}
			after = next
		}
		if got := fmt.Sprint(users); got != "[u6 u5 u4 u3 u2 u1 u0]" {
			t.Errorf("events newest first = %s", got)
		}
		audit, _, _ := st.Events(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"type": "audit"}})
		if len(audit) != 4 {
			t.Errorf("audit events = %d; want 4", len(audit))
		}
		if e := audit[0]; e.User != "u6" || e.Site != "site-sx" || !e.Timestamp.Equal(t0.Add(6*time.Second)) {
			t.Errorf("newest audit event = %+v", e)
		}
		// Lookup by UUID.
		if got, err := st.Event(ctx, audit[0].UUID); err != nil || got.User != "u6" {
			t.Errorf("Event(uuid) = %+v, %v", got, err)
		}
		if _, err := st.Event(ctx, "nope"); !errors.Is(err, faultmgr.ErrEventNotFound) {
			t.Errorf("Event(unknown) = %v; want not found", err)
		}
		// Time range: since inclusive, until exclusive.
		window, _, err := st.Events(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{
			"since": t0.Add(2 * time.Second).Format(time.RFC3339Nano), "until": t0.Add(5 * time.Second).Format(time.RFC3339Nano)}})
		if err != nil || len(window) != 3 || window[0].User != "u4" || window[2].User != "u2" {
			t.Errorf("events in [2s, 5s) = %d, %v; want u4, u3, u2", len(window), err)
		}
		if _, _, err := st.Events(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"since": "yesterday"}}); !errors.Is(err, errs.Invalid) {
			t.Errorf("since=yesterday: %v; want invalid", err)
		}
		// Entity prefix, with LIKE's wildcards taken literally.
		for i, ent := range []string{"host=worker-1.process=sm", "host=worker-10", "host=w%rker_1", "subcloud=site-1"} {
			id, _ := uuid.NewV7()
			st.AppendEvent(ctx, faultmgr.Event{UUID: id.String(), Type: faultmgr.EventLog, EntityInstanceID: ent,
				Timestamp: t0.Add(time.Duration(10+i) * time.Second)})
		}
		for prefix, want := range map[string]int{"host=worker-1": 2, "host=worker-1.": 1, "host=w%": 1, "host=w_rker": 0, "subcloud=": 1} {
			got, _, err := st.Events(ctx, rest.ListOptions{Limit: 100, Filters: map[string]string{"entity_instance_id": prefix}})
			if err != nil || len(got) != want {
				t.Errorf("entity prefix %q: %d events, %v; want %d", prefix, len(got), err, want)
			}
		}
	})
}
