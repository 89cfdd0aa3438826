package bmc

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// ipmiBackend speaks IPMI v2.0 (RMCP+) through go-ipmi's pure-Go client:
// one session per call, cipher suite 17 then 3 (never 0; no cipher suite
// discovery, which BMCs such as ipmi_sim do not answer).
type ipmiBackend struct {
	c    *Client
	host string
	port int
	// suite is the cipher suite that worked last (0: none yet); it is
	// tried first. Calls are serialised by the Client.
	suite types.CipherSuiteID
}

func (b *ipmiBackend) protocol() string { return "ipmi" }

// session opens an authenticated session for fn and closes it after.
func (b *ipmiBackend) session(ctx context.Context, fn func(*client.Client) error) error {
	cr := b.c.credentials()
	cl, err := client.NewClient(b.host, b.port, cr.Username, cr.Password)
	if err != nil {
		return &Error{Class: ErrFailed, detail: "bad user name or password length"}
	}
	// Each UDP exchange waits at most a quarter of the call's time, with
	// retries filling the rest.
	wait := time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = max(100*time.Millisecond, time.Until(dl)/4)
	}
	cl.WithTimeout(wait)
	cl.WithRetry(2)
	cl.WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	suites := []types.CipherSuiteID{types.CipherSuiteID17, types.CipherSuiteID3}
	if b.suite == types.CipherSuiteID3 {
		suites = []types.CipherSuiteID{types.CipherSuiteID3, types.CipherSuiteID17}
	}
	var last error
	for _, cs := range suites {
		cl.WithCipherSuiteID(cs)
		if last = cl.Connect(ctx); last == nil {
			b.suite = cs
			break
		}
		// A BMC without suite 17 may refuse it with a status code or
		// with a reply go-ipmi cannot parse (ipmi_sim): try the next
		// suite unless the credentials were refused or time is up.
		if ipmiClass(last) == ErrAuth || ctx.Err() != nil {
			return ipmiError(ctx, last)
		}
	}
	if last != nil {
		return ipmiError(ctx, last)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait)
		defer cancel()
		_ = cl.Close(cctx)
	}()
	if err := fn(cl); err != nil {
		return ipmiError(ctx, err)
	}
	return nil
}

// ipmiClass classifies a go-ipmi error: RMCP+ status codes during session
// setup, RAKP mismatches, completion codes.
func ipmiClass(err error) error {
	if errors.Is(err, client.ErrRAKPAuthentication) {
		return ErrAuth
	}
	// go-ipmi v0.9.1's Connect20 joins the errors of its cipher suite
	// attempts with %v, which drops their types; their texts are those of
	// the library's own error values.
	msg := err.Error()
	if strings.Contains(msg, client.ErrRAKPAuthentication.Error()) {
		return ErrAuth
	}
	for _, code := range []types.RmcpStatusCode{types.RmcpStatusCodeUnauthorizedName,
		types.RmcpStatusCodeInvalidIntegrityCheckValue, types.RmcpStatusCodeUnauthorizedRoleOfPriLevel,
		types.RmcpStatusCodeInvalidRole, types.RmcpStatusCodeUnauthorizedGUID} {
		if strings.Contains(msg, types.NewRmcpStatusError(code).Error()) {
			return ErrAuth
		}
	}
	for _, code := range []types.RmcpStatusCode{types.RmcpStatusCodeNoCipherSuiteMatch, types.RmcpStatusCodeInvalidAuthAlg,
		types.RmcpStatusCodeInvalidIntegrityAlg, types.RmcpStatusCodeInvalidConfidentAlg} {
		if strings.Contains(msg, types.NewRmcpStatusError(code).Error()) {
			return ErrUnsupported
		}
	}
	var st *types.RmcpStatusError
	if errors.As(err, &st) {
		switch st.StatusCode() {
		case types.RmcpStatusCodeUnauthorizedName, types.RmcpStatusCodeInvalidIntegrityCheckValue,
			types.RmcpStatusCodeUnauthorizedRoleOfPriLevel, types.RmcpStatusCodeInvalidRole,
			types.RmcpStatusCodeUnauthorizedGUID:
			return ErrAuth
		case types.RmcpStatusCodeNoCipherSuiteMatch, types.RmcpStatusCodeInvalidAuthAlg,
			types.RmcpStatusCodeInvalidIntegrityAlg, types.RmcpStatusCodeInvalidConfidentAlg,
			types.RmcpStatusCodeNoMatchingAuthPayload, types.RmcpStatusCodeNoMatchingIntegrityPayload:
			return ErrUnsupported
		}
		return ErrFailed
	}
	if re, ok := types.IsResponseError(err); ok {
		switch re.CompletionCode() {
		case types.CodeInvalidCommand, types.CodeInvalidCommandForLUN, types.CodeParameterNotSupported:
			return ErrUnsupported
		case types.CodeInsufficientPrivilege:
			return ErrAuth
		}
		return ErrFailed
	}
	return nil
}

func ipmiError(ctx context.Context, err error) error {
	if c := ipmiClass(err); c != nil {
		return &Error{Class: c, detail: err.Error()}
	}
	if ctx.Err() != nil {
		return &Error{Class: ErrUnreachable, detail: "no answer in time"}
	}
	// go-ipmi reports UDP timeouts and refusals as wrapped net errors or
	// plain "timeout" texts; with no completion code or RMCP+ status, the
	// BMC did not answer usefully.
	return &Error{Class: ErrUnreachable, detail: err.Error()}
}

func (b *ipmiBackend) powerState(ctx context.Context) (PowerState, error) {
	st := PowerUnknown
	err := b.session(ctx, func(cl *client.Client) error {
		res, err := cl.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		st = PowerOff
		if res.PowerIsOn {
			st = PowerOn
		}
		return nil
	})
	return st, err
}

func (b *ipmiBackend) power(ctx context.Context, a action) error {
	ctl := map[action]chassis.ChassisControl{
		actOn: chassis.ChassisControlPowerUp, actOff: chassis.ChassisControlPowerDown,
		actCycle: chassis.ChassisControlPowerCycle, actReset: chassis.ChassisControlHardReset,
		actGraceful: chassis.ChassisControlSoftShutdown,
	}[a]
	return b.session(ctx, func(cl *client.Client) error {
		if a == actCycle {
			// Power cycle is refused by some BMCs while the host is off
			// (spec §28.3); treat it as power on then.
			res, err := cl.GetChassisStatus(ctx)
			if err != nil {
				return err
			}
			if !res.PowerIsOn {
				ctl = chassis.ChassisControlPowerUp
			}
		}
		_, err := cl.ChassisControl(ctx, ctl)
		return err
	})
}

func (b *ipmiBackend) sensors(ctx context.Context) ([]Sensor, error) {
	var out []Sensor
	err := b.session(ctx, func(cl *client.Client) error {
		ss, err := cl.GetSensors(ctx)
		if err != nil {
			return err
		}
		for _, s := range ss {
			if s.NotPresent {
				continue
			}
			out = append(out, ipmiSensor(s))
		}
		return nil
	})
	return out, err
}

func ipmiSensor(s *types.Sensor) Sensor {
	out := Sensor{Name: s.Name, Kind: SensorOther, Value: s.Value, Unit: s.SensorUnit.BaseUnit.String(), Status: SensorOK}
	switch s.SensorType {
	case types.SensorTypeTemperature:
		out.Kind, out.Unit = SensorTemperature, "C"
	case types.SensorTypeFan:
		out.Kind, out.Unit = SensorFan, "RPM"
	case types.SensorTypeVoltage:
		out.Kind, out.Unit = SensorVoltage, "V"
	}
	switch s.SensorUnit.BaseUnit {
	case types.SensorUnitType_Watts:
		out.Kind, out.Unit = SensorPower, "W"
	case types.SensorUnitType_RPM:
		out.Kind, out.Unit = SensorFan, "RPM"
	case types.SensorUnitType_DegreesC:
		out.Kind, out.Unit = SensorTemperature, "C"
	}
	switch {
	case !s.ReadingAvailable || s.ScanningDisabled:
		out.Status, out.Value = SensorUnavailable, 0
	case !s.IsThreshold():
	default:
		switch s.Threshold.ThresholdStatus {
		case types.SensorThresholdStatus_UNC, types.SensorThresholdStatus_LNC:
			out.Status = SensorWarning
		case types.SensorThresholdStatus_OK, "":
		default:
			out.Status = SensorCritical
		}
	}
	return out
}
