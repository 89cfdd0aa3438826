package inventorydb_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/inventory/inventorydb"
)

func TestConformanceEnrollment(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		st, err := inventorydb.Open(ctx, open(t))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		for i, id := range []string{"01900000-0000-7000-8000-00000000000a", "01900000-0000-7000-8000-00000000000b"} {
			if err := st.CreateJoinToken(ctx, inventory.JoinToken{ID: id, CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
				[]string{"hash-a", "hash-b"}[i]); err != nil {
				t.Fatal(err)
			}
		}
		m1 := "6e0ad5f4-7c1b-4d3e-9a7b-2f1e0c9d8b7a"
		newHost := func(id string) inventory.Host {
			return inventory.Host{UUID: id, Name: inventory.DiscoveredName(id), Provisioning: inventory.Unprovisioned,
				Administrative: inventory.Locked, Operational: inventory.Disabled, Availability: inventory.Offline}
		}
		count := func() int {
			hs, _, _ := st.Hosts(ctx, rest.ListOptions{Limit: 100})
			return len(hs)
		}
		// Expired, unknown: refused, nothing recorded.
		if _, err := st.Enroll(ctx, "hash-a", now.Add(2*time.Hour), newHost(m1), inventory.HostCert{Serial: "1"}); !errors.Is(err, inventory.ErrJoinRefused) {
			t.Errorf("Enroll(expired) = %v; want ErrJoinRefused", err)
		}
		if _, err := st.Enroll(ctx, "hash-x", now, newHost(m1), inventory.HostCert{Serial: "1"}); !errors.Is(err, inventory.ErrJoinRefused) {
			t.Errorf("Enroll(unknown) = %v; want ErrJoinRefused", err)
		}
		if n := count(); n != 0 {
			t.Fatalf("%d hosts after refused joins; want 0", n)
		}
		h, err := st.Enroll(ctx, "hash-a", now, newHost(m1), inventory.HostCert{Serial: "1", IssuedAt: now})
		if err != nil || h.UUID != m1 {
			t.Fatalf("Enroll = %+v, %v", h, err)
		}
		// The same machine may retry with its token (its answer was lost)...
		if _, err := st.Enroll(ctx, "hash-a", now, newHost(m1), inventory.HostCert{Serial: "1b", IssuedAt: now}); err != nil {
			t.Errorf("same machine retrying with its token: %v; want accepted", err)
		}
		// ... any other machine may not.
		m2 := "7f1be605-8d2c-4e4f-8b8c-3a2f1d0e9c8b"
		if _, err := st.Enroll(ctx, "hash-a", now, newHost(m2), inventory.HostCert{Serial: "2"}); !errors.Is(err, inventory.ErrJoinRefused) {
			t.Errorf("Enroll(used) = %v; want ErrJoinRefused", err)
		}
		if n := count(); n != 1 {
			t.Errorf("%d hosts; want 1", n)
		}
		// The same machine joining again keeps its record, with the new certificate.
		named := h
		named.Name = "worker-0"
		if _, err := st.PutHost(ctx, named, h.Rev); err != nil {
			t.Fatal(err)
		}
		again, err := st.Enroll(ctx, "hash-b", now, newHost(m1), inventory.HostCert{Serial: "3", IssuedAt: now})
		if err != nil || again.Name != "worker-0" {
			t.Errorf("re-join = %+v, %v; want the existing record", again, err)
		}
		if c, _ := st.HostCert(ctx, m1); c.Serial != "3" || c.RevokedAt != nil {
			t.Errorf("certificate after re-join = %+v; want serial 3", c)
		}
		toks, _, _ := st.JoinTokens(ctx, rest.ListOptions{Limit: 10})
		if len(toks) != 2 || toks[0].UsedBy != m1 || toks[0].UsedAt == nil {
			t.Errorf("join tokens = %+v", toks)
		}
		// Deleting the host revokes its certificate in the same transaction.
		if err := st.DeleteHost(ctx, m1); err != nil {
			t.Fatal(err)
		}
		if c, _ := st.HostCert(ctx, m1); c.RevokedAt == nil {
			t.Error("certificate not revoked after DeleteHost")
		}
		if err := st.DeleteJoinToken(ctx, toks[0].ID); err != nil {
			t.Error(err)
		}
		if err := st.DeleteJoinToken(ctx, toks[0].ID); !errors.Is(err, inventory.ErrJoinTokenMissing) {
			t.Errorf("DeleteJoinToken twice = %v", err)
		}
	})
}
