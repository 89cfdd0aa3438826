// Package sqldbtest opens throwaway stores for tests on every engine the test
// run asks for, so one conformance suite runs against SQLite and PostgreSQL.
//
// PETREL_TEST_DB lists the engines (comma-separated; default "sqlite").
// With "postgres" in the list, PETREL_TEST_POSTGRES_DSN must name a server on
// which the test may create and drop databases (the test script starts a
// throwaway cluster); each test gets a database of its own.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/sqldb"
)

// Engines returns the engines this test run covers.
func Engines() []sqldb.Kind {
	v := os.Getenv("PETREL_TEST_DB")
	if v == "" {
		return []sqldb.Kind{sqldb.SQLite}
	}
	var out []sqldb.Kind
	for _, s := range strings.Split(v, ",") {
		out = append(out, sqldb.Kind(strings.TrimSpace(s)))
	}
	return out
}

// Each runs fn once per engine as a subtest named after the engine.
func Each(t *testing.T, fn func(t *testing.T, open func(t *testing.T) *sqldb.DB)) {
	t.Helper()
	for _, k := range Engines() {
		t.Run(string(k), func(t *testing.T) {
			fn(t, func(t *testing.T) *sqldb.DB { return Open(t, k) })
		})
	}
}

// EachDSN runs fn once per engine with the DSN of a fresh, empty store
// (for code that opens the store itself, perhaps several times).
func EachDSN(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Helper()
	for _, k := range Engines() {
		t.Run(string(k), func(t *testing.T) { fn(t, NewDSN(t, k)) })
	}
}

// NewDSN returns the DSN of a fresh, empty store on engine k, removed at
// cleanup.
func NewDSN(t *testing.T, k sqldb.Kind) string {
	t.Helper()
	switch k {
	case sqldb.SQLite:
		return filepath.Join(t.TempDir(), "test.db")
	case sqldb.Postgres:
		return postgresDB(t)
	}
	t.Fatalf("PETREL_TEST_DB names unknown engine %q", k)
	return ""
}

// Open returns a fresh, empty store on engine k, closed and removed at cleanup.
func Open(t *testing.T, k sqldb.Kind) *sqldb.DB {
	t.Helper()
	ctx := context.Background()
	dsn := NewDSN(t, k)
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("sqldb.Open(%s) = %v", k, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func postgresDB(t *testing.T) string {
	t.Helper()
	admin := os.Getenv("PETREL_TEST_POSTGRES_DSN")
	if admin == "" {
		// Asked for PostgreSQL and none given: a failure, never a silent skip.
		t.Fatal("PETREL_TEST_DB includes postgres but PETREL_TEST_POSTGRES_DSN is not set (scripts/test.sh starts a throwaway cluster)")
	}
	adb, err := sqldb.Open(context.Background(), admin)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer adb.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "petrel_t_" + hex.EncodeToString(b[:])
	if err := adb.Exec("CREATE DATABASE " + name).Error; err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		adb, err := sqldb.Open(context.Background(), admin)
		if err != nil {
			t.Errorf("connect to drop %s: %v", name, err)
			return
		}
		defer adb.Close()
		if err := adb.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)").Error; err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return replaceDBName(admin, name)
}

// replaceDBName points a key=value PostgreSQL DSN at another database.
func replaceDBName(dsn, name string) string {
	var parts []string
	for _, f := range strings.Fields(dsn) {
		if !strings.HasPrefix(f, "dbname=") {
			parts = append(parts, f)
		}
	}
	return strings.Join(append(parts, "dbname="+name), " ")
}
