// Package sqldb opens Petrel's SQL stores: SQLite (pure Go) by default and
// PostgreSQL by DSN, always with the durability settings of ENGINEERING.md —
// SQLite in WAL mode with synchronous=FULL, PostgreSQL with
// synchronous_commit=on — and checks those settings after opening, so an
// acknowledged write is a committed write.
package sqldb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Kind is the database engine behind a store.
type Kind string

const (
	SQLite   Kind = "sqlite"
	Postgres Kind = "postgres"
)

// DB is an open store: the gorm handle and the engine behind it.
type DB struct {
	*gorm.DB
	Kind Kind
}

// KindOf tells the engine a DSN names: postgres:// or postgresql:// URLs and
// key=value strings with host= are PostgreSQL; anything else is a SQLite path.
func KindOf(dsn string) Kind {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") ||
		strings.Contains(dsn, "host=") {
		return Postgres
	}
	return SQLite
}

// PostgresPool bounds the connections a process opens to PostgreSQL.
const PostgresPool = 32

// Open opens the store named by dsn (a SQLite file path, or a PostgreSQL DSN)
// and verifies its durability settings.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if dsn == "" {
		return nil, errors.New("sqldb: empty DSN")
	}
	cfg := &gorm.Config{
		Logger:                 logger.Discard,
		NowFunc:                func() time.Time { return time.Now().UTC() },
		SkipDefaultTransaction: true, // callers use explicit transactions where they need them
		TranslateError:         true,
	}
	var (
		g    *gorm.DB
		err  error
		kind = KindOf(dsn)
	)
	switch kind {
	case Postgres:
		g, err = gorm.Open(postgres.Open(withPGSyncCommit(dsn)), cfg)
	default:
		g, err = gorm.Open(sqlite.Open(sqliteDSN(dsn)), cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("sqldb: open %s: %w", kind, err)
	}
	db := &DB{DB: g, Kind: kind}
	sqlDB, _ := g.DB()
	if kind == SQLite {
		// One writer at a time is SQLite's model; a small pool keeps readers
		// concurrent (WAL) without piling up lock waits.
		sqlDB.SetMaxOpenConns(8)
	} else {
		// A bounded pool, kept open: a burst (thousands of sites
		// reconnecting at once) queues here instead of forking a server
		// process per caller and running into max_connections.
		sqlDB.SetMaxOpenConns(PostgresPool)
		sqlDB.SetMaxIdleConns(PostgresPool)
	}
	if err := db.CheckDurability(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// sqliteDSN turns a path into a glebarez DSN whose pragmas apply to every
// pooled connection. _txlock=immediate takes the write lock at BEGIN, so two
// writers queue on busy_timeout instead of failing on a lock upgrade.
func sqliteDSN(path string) string {
	path = strings.TrimPrefix(path, "sqlite://")
	path = strings.TrimPrefix(path, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	q := []string{
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)",
		"_pragma=busy_timeout(10000)",
		"_pragma=foreign_keys(1)",
		"_txlock=immediate",
	}
	return "file:" + path + "?" + strings.Join(q, "&")
}

// withPGSyncCommit forces synchronous_commit=on for the session, whatever
// the server's default.
func withPGSyncCommit(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn
		}
		q := u.Query()
		q.Set("synchronous_commit", "on")
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " synchronous_commit=on"
}

// Durability is what an open store reports about its commit guarantees.
type Durability struct {
	JournalMode       string // SQLite: must be "wal"
	Synchronous       int    // SQLite: must be 2 (FULL)
	SynchronousCommit string // PostgreSQL: must be "on"
}

// ReadDurability reads the settings in force on a pooled connection.
func (db *DB) ReadDurability(ctx context.Context) (Durability, error) {
	var d Durability
	g := db.WithContext(ctx)
	switch db.Kind {
	case Postgres:
		if err := g.Raw("SHOW synchronous_commit").Scan(&d.SynchronousCommit).Error; err != nil {
			return d, fmt.Errorf("sqldb: read synchronous_commit: %w", err)
		}
	default:
		if err := g.Raw("PRAGMA journal_mode").Scan(&d.JournalMode).Error; err != nil {
			return d, fmt.Errorf("sqldb: read journal_mode: %w", err)
		}
		if err := g.Raw("PRAGMA synchronous").Scan(&d.Synchronous).Error; err != nil {
			return d, fmt.Errorf("sqldb: read synchronous: %w", err)
		}
	}
	return d, nil
}

// ErrNotDurable reports a store opened without the required settings.
var ErrNotDurable = errors.New("sqldb: store is not durable")

// CheckDurability fails with ErrNotDurable unless acknowledged writes are
// committed to stable storage.
func (db *DB) CheckDurability(ctx context.Context) error {
	d, err := db.ReadDurability(ctx)
	if err != nil {
		return err
	}
	switch db.Kind {
	case Postgres:
		if d.SynchronousCommit != "on" {
			return fmt.Errorf("synchronous_commit=%q, want on: %w", d.SynchronousCommit, ErrNotDurable)
		}
	default:
		if d.JournalMode != "wal" || d.Synchronous != 2 {
			return fmt.Errorf("journal_mode=%q synchronous=%d, want wal and 2 (FULL): %w",
				d.JournalMode, d.Synchronous, ErrNotDurable)
		}
	}
	return nil
}

// Ping checks the store answers.
func (db *DB) Ping(ctx context.Context) error {
	sqlDB, err := db.DB.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// Close releases the store's connections. It is safe to call twice.
func (db *DB) Close() error {
	sqlDB, err := db.DB.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// IsUniqueViolation reports whether err is a unique-constraint failure on
// either engine.
func IsUniqueViolation(err error) bool {
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "SQLSTATE 23505")
}
