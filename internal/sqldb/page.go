package sqldb

import "gorm.io/gorm"

// Page applies keyset paging to q, ordered by the unique column key: rows with
// key > after, at most limit+1 of them. Callers pass the extra row to
// NextAfter to learn whether a further page exists.
func Page(q *gorm.DB, key, after string, limit int) *gorm.DB {
	if after != "" {
		q = q.Where(key+" > ?", after)
	}
	return q.Order(key + " ASC").Limit(limit + 1)
}

// Trim cuts rows fetched by Page to limit and returns the key to continue
// after, or "" on the last page.
func Trim[T any](rows []T, limit int, keyOf func(T) string) ([]T, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	return rows, keyOf(rows[limit-1])
}
