package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

// TestConformanceDurability asserts the ENGINEERING.md settings on every
// engine: an acknowledged write is a committed write.
func TestConformanceDurability(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		db := open(t)
		d, err := db.ReadDurability(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		switch db.Kind {
		case sqldb.SQLite:
			if d.JournalMode != "wal" || d.Synchronous != 2 {
				t.Errorf("SQLite durability = %+v; want journal_mode wal, synchronous 2 (FULL)", d)
			}
		case sqldb.Postgres:
			if d.SynchronousCommit != "on" {
				t.Errorf("PostgreSQL synchronous_commit = %q; want on", d.SynchronousCommit)
			}
		}
		// Every pooled connection carries the settings, not just the first.
		sqlDB, _ := db.DB.DB()
		query, want := "PRAGMA synchronous", "2"
		if db.Kind == sqldb.Postgres {
			query, want = "SHOW synchronous_commit", "on"
		}
		var conns []*sql.Conn
		for range 4 {
			c, err := sqlDB.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			var got string
			if err := c.QueryRowContext(context.Background(), query).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("connection %d: %s = %s; want %s", len(conns), query, got, want)
			}
		}
		for _, c := range conns {
			c.Close()
		}
		if err := db.CheckDurability(context.Background()); err != nil {
			t.Errorf("CheckDurability() = %v; want nil", err)
		}
	})
}

func TestCheckDurabilityRejectsWeakSQLite(t *testing.T) {
	db, err := sqldb.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sqlDB, _ := db.DB.DB()
	sqlDB.SetMaxOpenConns(1) // the pragma below must hit the connection checked next
	if err := db.Exec("PRAGMA synchronous=NORMAL").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.CheckDurability(context.Background()); !errors.Is(err, sqldb.ErrNotDurable) {
		t.Errorf("CheckDurability() after synchronous=NORMAL = %v; want ErrNotDurable", err)
	}
}

func TestKindOf(t *testing.T) {
	for dsn, want := range map[string]sqldb.Kind{
		"/var/lib/petrel/site.db":                         sqldb.SQLite,
		"postgres://u@127.0.0.1:5432/petrel":              sqldb.Postgres,
		"host=127.0.0.1 port=5432 user=postgres dbname=x": sqldb.Postgres,
		"file:/tmp/x.db":                                  sqldb.SQLite,
	} {
		if got := sqldb.KindOf(dsn); got != want {
			t.Errorf("KindOf(%q) = %s; want %s", dsn, got, want)
		}
	}
}
