package patchdb_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/patchdb"
)

// TestConformance runs on every engine the test run names (SQLite by
// default; PostgreSQL with PETREL_TEST_DB=sqlite,postgres).
func TestConformance(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := openDB(t)
		s, err := patchdb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CheckDurability(ctx); err != nil {
			t.Fatal(err)
		}
		rec := swpatch.Record{ID: "P1", Version: "0.1.0+P1", Requires: []string{"P0"}, RebootRequired: true, HasBinary: true, Files: 1, Size: 100, SHA256: "ab"}
		got, err := s.Create(ctx, rec, []byte(`{"id":"P1"}`), []byte("sig"))
		if err != nil {
			t.Fatal(err)
		}
		if got.State != swpatch.Available || got.CreatedAt.IsZero() {
			t.Fatalf("Create = %+v; want available with a time", got)
		}
		if _, err := s.Create(ctx, rec, []byte(`{"id":"P1"}`), []byte("sig")); !errors.Is(err, swpatch.ErrPatchExists) || !errors.Is(err, errs.Conflict) {
			t.Errorf("Create(duplicate) = %v; want ErrPatchExists", err)
		}
		if _, err := s.Patch(ctx, "nope"); !errors.Is(err, swpatch.ErrPatchNotFound) || !errors.Is(err, errs.NotFound) {
			t.Errorf("Patch(nope) = %v; want ErrPatchNotFound", err)
		}
		m, sig, err := s.Manifest(ctx, "P1")
		if err != nil || string(m) != `{"id":"P1"}` || string(sig) != "sig" {
			t.Errorf("Manifest = %q, %q, %v", m, sig, err)
		}
		up, err := s.Update(ctx, "P1", func(r *swpatch.Record) error {
			r.Hosts = map[string]swpatch.HostState{"controller-0": swpatch.HostPending}
			return r.To(swpatch.Deploying, r.UpdatedAt)
		})
		if err != nil || up.State != swpatch.Deploying {
			t.Fatalf("Update = %+v, %v", up, err)
		}
		again, _ := s.Patch(ctx, "P1")
		if again.State != swpatch.Deploying || again.Hosts["controller-0"] != swpatch.HostPending || again.Requires[0] != "P0" {
			t.Fatalf("Patch after update = %+v", again)
		}
		// A refused transition changes nothing.
		if _, err := s.Update(ctx, "P1", func(r *swpatch.Record) error { return r.To(swpatch.Available, r.UpdatedAt) }); !errors.Is(err, errs.InvalidTransition) {
			t.Errorf("Update(deploying -> available) = %v; want InvalidTransition", err)
		}
		if again, _ := s.Patch(ctx, "P1"); again.State != swpatch.Deploying {
			t.Errorf("state after a refused update = %s", again.State)
		}
		// The archive, in pieces (over one chunk), and gone with the patch.
		arch := bytes.Repeat([]byte("0123456789abcdef"), 70000) // 1.07 MiB
		if err := s.PutArchive(ctx, "P1", bytes.NewReader(arch)); err != nil {
			t.Fatal(err)
		}
		var back bytes.Buffer
		if n, err := s.ReadArchive(ctx, "P1", &back); err != nil || n != int64(len(arch)) || !bytes.Equal(back.Bytes(), arch) {
			t.Fatalf("ReadArchive = %d, %v; want the %d bytes stored", n, err, len(arch))
		}
		if _, err := s.ReadArchive(ctx, "nope", io.Discard); !errors.Is(err, swpatch.ErrPatchNotFound) {
			t.Errorf("ReadArchive(nope) = %v", err)
		}
		veto := errors.New("veto")
		if err := s.Delete(ctx, "P1", func(swpatch.Record) error { return veto }); !errors.Is(err, veto) {
			t.Errorf("Delete(vetoed) = %v", err)
		}
		list, err := s.Patches(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("Patches = %v, %v", list, err)
		}
		if err := s.Delete(ctx, "P1", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadArchive(ctx, "P1", io.Discard); !errors.Is(err, swpatch.ErrPatchNotFound) {
			t.Errorf("ReadArchive after delete = %v", err)
		}
		if err := s.Delete(ctx, "P1", nil); !errors.Is(err, swpatch.ErrPatchNotFound) {
			t.Errorf("Delete(gone) = %v", err)
		}
	})
}
