package faultdb

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/internal/sqldb"
)

// Bulk inserts: a batch's rows travel as ONE JSON parameter that the engine
// unpacks itself (SQLite json_each, PostgreSQL json_array_elements), instead
// of one bound parameter per value. Binding was where batches spent their
// time (SQLite: the driver's bind was the top of the profile; PostgreSQL:
// parsing thousands of placeholders per statement).

// column is a column of a bulk insert and its PostgreSQL type.
type column struct{ name, pgType string }

var eventColumns = []column{{"uuid", "text"}, {"seq", "bigint"}, {"alarm_uuid", "text"}, {"type", "text"},
	{"alarm_id", "text"}, {"entity_instance_id", "text"}, {"severity", "text"}, {"reason_text", "text"},
	{"user_name", "text"}, {"role", "text"}, {"action", "text"}, {"target", "text"}, {"result", "text"},
	{"request_id", "text"}, {"timestamp", "timestamptz"}, {"site", "text"}}

var alarmColumns = []column{{"uuid", "text"}, {"site", "text"}, {"alarm_id", "text"}, {"entity_instance_id", "text"},
	{"severity", "text"}, {"reason_text", "text"}, {"alarm_type", "text"}, {"probable_cause", "text"},
	{"repair", "text"}, {"service_affecting", "boolean"}, {"mgmt_affecting", "text"}, {"degrade_affecting", "text"},
	{"acked_by", "text"}, {"acked_at", "timestamptz"}, {"timestamp", "timestamptz"}}

func (r *eventRow) values(t func(time.Time) any) []any {
	return []any{r.UUID, r.Seq, r.AlarmUUID, r.Type, r.AlarmID, r.EntityInstanceID, r.Severity, r.ReasonText,
		r.UserName, r.Role, r.Action, r.Target, r.Result, r.RequestID, t(r.Timestamp), r.Site}
}

func (r *alarmRow) values(t func(time.Time) any) []any {
	var acked any
	if r.AckedAt != nil {
		acked = t(*r.AckedAt)
	}
	return []any{r.UUID, r.Site, r.AlarmID, r.EntityInstanceID, r.Severity, r.ReasonText, r.AlarmType,
		r.ProbableCause, r.Repair, r.ServiceAffecting, r.MgmtAffecting, r.DegradeAffecting, r.AckedBy, acked, t(r.Timestamp)}
}

// sqliteTime is how the SQLite driver writes times (its first parse
// format), so bulk-inserted times sort and compare with bound ones.
const sqliteTime = "2006-01-02 15:04:05.999999999-07:00"

// bulkSQL is the statement inserting rows given as a JSON array of arrays;
// with ignore, rows whose key column is already stored are skipped.
func bulkSQL(kind sqldb.Kind, table string, cols []column, ignore string) string {
	names := make([]string, len(cols))
	exprs := make([]string, len(cols))
	for i, c := range cols {
		names[i] = `"` + c.name + `"`
		if kind == sqldb.Postgres {
			exprs[i] = fmt.Sprintf("(e->>%d)::%s", i, c.pgType)
		} else {
			exprs[i] = fmt.Sprintf("value->>%d", i)
		}
	}
	from := "json_each(?)"
	if kind == sqldb.Postgres {
		from = "json_array_elements(?::json) AS e"
	}
	q := fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s", table, strings.Join(names, ","), strings.Join(exprs, ","), from)
	if ignore != "" {
		if kind == sqldb.SQLite {
			q += " WHERE true" // SQLite's parser needs it before an upsert clause
		}
		q += fmt.Sprintf(` ON CONFLICT ("%s") DO NOTHING`, ignore)
	}
	return q
}

// bulkRows is a table's rows for bulkInsert.
type bulkRows interface {
	values(t func(time.Time) any) []any
}

// bulkInsert inserts rows into table in statements of at most chunk rows.
func bulkInsert[R bulkRows](tx *gorm.DB, kind sqldb.Kind, table string, cols []column, ignore string, rows []R, chunk int) error {
	t := func(v time.Time) any { return v.UTC().Format(sqliteTime) }
	if kind == sqldb.Postgres {
		t = func(v time.Time) any { return v.UTC().Format(time.RFC3339Nano) }
	}
	stmt := bulkSQL(kind, table, cols, ignore)
	for len(rows) > 0 {
		n := min(len(rows), chunk)
		vals := make([][]any, n)
		for i, r := range rows[:n] {
			vals[i] = r.values(t)
		}
		b, err := json.Marshal(vals)
		if err != nil {
			return err
		}
		if err := tx.Exec(stmt, string(b)).Error; err != nil {
			return fmt.Errorf("faultdb: insert into %s: %w", table, err)
		}
		rows = rows[n:]
	}
	return nil
}
