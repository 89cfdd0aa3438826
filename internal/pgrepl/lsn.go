package pgrepl

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseLSN parses a WAL location as PostgreSQL prints it ("16/B374D848":
// the high and low 32 bits in hexadecimal).
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("pgrepl: %q is not a WAL location", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("pgrepl: %q is not a WAL location", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("pgrepl: %q is not a WAL location", s)
	}
	return h<<32 | l, nil
}

// FormatLSN formats a WAL location as PostgreSQL does.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}

// parseOptLSN parses a location that SQL may report as NULL (an empty string
// after coalesce): NULL is 0.
func parseOptLSN(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	return ParseLSN(s)
}
