// Package errs defines the kinds of error that cross Petrel's API boundary.
//
// Domain packages declare their own sentinel errors and wrap one of these kinds
// (for example inventory.ErrHostNotFound wraps errs.NotFound), so the REST layer
// maps every error to an HTTP status and a stable wire code through one table,
// and the client maps wire codes back to the same kinds.
package errs

//lint:file-ignore ST1012 the kinds are named for how they read at call sites: errs.NotFound, errs.Invalid

import (
	"errors"
	"fmt"
)

// The kinds. Each has a stable wire code (see Code).
var (
	NotFound          = errors.New("not found")
	Invalid           = errors.New("invalid argument")
	Conflict          = errors.New("conflict")
	InvalidTransition = errors.New("invalid state transition")
	Unauthenticated   = errors.New("unauthenticated")
	Forbidden         = errors.New("permission denied")
	NotLeader         = errors.New("not leader")
	Unavailable       = errors.New("unavailable")
	TooLarge          = errors.New("payload too large")
	RateLimited       = errors.New("too many requests")
)

// codes lists each kind with its wire code, in match order.
var codes = []struct {
	kind error
	code string
}{
	{NotFound, "not_found"},
	{Invalid, "invalid_argument"},
	{Conflict, "conflict"},
	{InvalidTransition, "invalid_transition"},
	{Unauthenticated, "unauthenticated"},
	{Forbidden, "permission_denied"},
	{NotLeader, "not_leader"},
	{Unavailable, "unavailable"},
	{TooLarge, "payload_too_large"},
	{RateLimited, "rate_limited"},
}

// Code returns the wire code of err's kind, or "internal" when err has none.
func Code(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.kind) {
			return c.code
		}
	}
	return "internal"
}

// FromCode returns the kind with the given wire code, or nil.
func FromCode(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.kind
		}
	}
	return nil
}

// FieldError is an invalid-argument error that names the offending field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes every FieldError an Invalid error.
func (e *FieldError) Is(target error) bool { return target == Invalid }

// Field returns a FieldError for field with a formatted message.
func Field(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// New returns a sentinel error of the given kind whose text is msg, for a
// package's own errors: errors.Is matches both the sentinel and the kind.
func New(kind error, msg string) error { return &kindError{kind: kind, msg: msg} }

// Wrapf returns an error of the given kind with a formatted message; the
// message is what clients see, so it must not carry internal detail.
func Wrapf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }
