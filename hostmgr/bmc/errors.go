package bmc

import (
	"errors"
	"strings"
)

// Classes of BMC failure. Every error a Client returns wraps exactly one
// of them (test with errors.Is), so callers can raise 200.010 with a
// repair hint (RepairHint) and decide whether retrying makes sense.
var (
	// ErrUnreachable: no answer in time (network, address, the BMC is
	// down or overloaded). Retry later.
	ErrUnreachable = errors.New("bmc: unreachable")
	// ErrAuth: the BMC refused the credentials. Retrying cannot help and
	// may lock the account: the Client holds further calls (see
	// Config.AuthHold) until the credentials change.
	ErrAuth = errors.New("bmc: authentication failed")
	// ErrUnsupported: the BMC does not offer the protocol, cipher suite or
	// operation.
	ErrUnsupported = errors.New("bmc: not supported")
	// ErrTLSPinMismatch: the Redfish certificate is not the one pinned on
	// first use. Someone must verify the new certificate and re-pin.
	ErrTLSPinMismatch = errors.New("bmc: TLS certificate changed")
	// ErrTLSUntrusted: the Redfish certificate does not verify against the
	// configured CA.
	ErrTLSUntrusted = errors.New("bmc: TLS certificate not trusted")
	// ErrBusy: too many calls are queued for this BMC already.
	ErrBusy = errors.New("bmc: too many calls queued")
	// ErrFailed: the BMC answered but the operation failed.
	ErrFailed = errors.New("bmc: operation failed")
)

// Error is a failed BMC call.
type Error struct {
	Op       string // "power-state", "power-on", "sensors", ...
	Addr     string // the BMC's address
	Protocol string // "redfish" or "ipmi"
	Class    error  // one of the Err* classes above
	detail   string // the cause, with any secret scrubbed
}

func (e *Error) Error() string {
	s := "bmc " + e.Addr + ": " + e.Op
	if e.Protocol != "" {
		s += " over " + e.Protocol
	}
	s += ": " + strings.TrimPrefix(e.Class.Error(), "bmc: ")
	if e.detail != "" {
		s += ": " + e.detail
	}
	return s
}

// Unwrap returns the class.
func (e *Error) Unwrap() error { return e.Class }

// RepairHint is the proposed repair action for a BMC error, for alarm
// 200.010.
func RepairHint(err error) string {
	switch {
	case errors.Is(err, ErrAuth):
		return "check the BMC user name and password configured for this host; calls are held until they change"
	case errors.Is(err, ErrTLSPinMismatch):
		return "the BMC presented a different TLS certificate than the one pinned: verify it (BMC replaced or reset?) and re-pin"
	case errors.Is(err, ErrTLSUntrusted):
		return "the BMC's TLS certificate does not verify against the configured CA: install a certificate from that CA or configure the right CA"
	case errors.Is(err, ErrUnsupported):
		return "the BMC does not support this over the configured protocol: try bmc type ipmi, redfish or dynamic"
	case errors.Is(err, ErrUnreachable):
		return "check the BMC's address, its network path from the controller and that the BMC is powered"
	case errors.Is(err, ErrBusy):
		return "the BMC is slow to answer; calls are being shed"
	}
	return "check the BMC's logs; retry the operation"
}

// scrub removes secret from s.
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "<redacted>")
}
