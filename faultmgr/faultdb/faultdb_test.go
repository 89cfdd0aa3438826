package faultdb_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
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
	})
}
