// Package bmc is host management's client for baseboard management
// controllers: power state and control, and sensors, over Redfish (through
// bmclib's gofish provider and gofish) and IPMI v2.0 (through go-ipmi's
// pure-Go client), behind one narrow interface.
//
// A [Client] serialises the calls to one BMC (one in flight, a bounded
// queue behind it) and bounds each with a timeout, so a slow BMC delays
// only its own host. Errors are classified ([ErrUnreachable],
// [ErrAuth], [ErrUnsupported], [ErrTLSPinMismatch], [ErrBusy]) so callers
// can raise 200.010 with a repair hint and stop retrying bad credentials.
// Credentials come from a 0600 file ([LoadCredentials]) and never appear in
// logs or error strings.
package bmc
