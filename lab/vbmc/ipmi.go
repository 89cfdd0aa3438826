package vbmc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/server"
	"github.com/bougou/go-ipmi/pkg/transport/udp"
	"github.com/bougou/go-ipmi/pkg/types"
)

// ipmiLANChannel is the channel number of the BMC's LAN interface.
const ipmiLANChannel = 1

// newIPMIServer builds an IPMI v2.0 (RMCP+) BMC on conn over go-ipmi's
// reference server: cipher suites 3 and 17 only (suite 0, which needs no
// password, is refused), IPMI v1.5 sessions disabled, one administrator.
// Chassis commands act on p; the SDR repository and Get Sensor Reading
// serve the chassis' sensors.
func newIPMIServer(conn *net.UDPConn, p Power, user, password string, guidSeed string) (*server.Server, error) {
	h := &ipmiHAL{power: p, sdr: newSDRStore()}
	guid := [16]byte{}
	sum := sha256.Sum256([]byte(guidSeed))
	copy(guid[:], sum[:16])
	b := ipmibmc.New(ipmibmc.DeviceInfo{
		DeviceID: 0x20, DeviceRevision: 1, FirmwareMajor: 1, FirmwareMinor: 0x00,
		IPMIVersion: 0x02, // BCD 2.0 as go-ipmi encodes it
		// 0x1291 is OpenIPMI's example manufacturer; the product id spells "PB".
		ManufacturerID: 0x1291, ProductID: 0x5042,
		// Chassis device, SDR repository device, sensor device.
		AdditionalDeviceSupport: 0x80 | 0x02 | 0x01,
	}, guid, h, ipmibmc.WithV15Disabled(),
		ipmibmc.WithCipherSuites([]types.CipherSuiteID{types.CipherSuiteID3, types.CipherSuiteID17}))
	u, err := b.Users.Add(2, user)
	if err != nil {
		return nil, fmt.Errorf("vbmc: ipmi user: %w", err)
	}
	if len(password) > ipmibmc.MaxPasswordLen {
		return nil, fmt.Errorf("vbmc: the IPMI password is longer than %d bytes", ipmibmc.MaxPasswordLen)
	}
	u.SetPassword([]byte(password))
	u.Enabled = true
	u.ChannelAccess[ipmiLANChannel] = ipmibmc.UserChannelAccess{MaxPrivilege: ipmibmc.PrivilegeLevelAdministrator, Enabled: true}

	reg := handlers.NewRegistry()
	handlers.RegisterAllHandlers(reg)
	reg.RegisterFunc(types.CommandGetSensorReading, h.getSensorReading)
	reg.RegisterFunc(types.CommandGetSensorThresholds, h.getSensorThresholds)
	return server.NewServer(b, udp.Wrap(conn), server.WithHandlerRegistry(reg)), nil
}

// serveIPMI serves conn until ctx ends.
func serveIPMI(ctx context.Context, conn *net.UDPConn, p Power, user, password, guidSeed string, log *slog.Logger) error {
	srv, err := newIPMIServer(conn, p, user, password, guidSeed)
	if err != nil {
		conn.Close()
		return err
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	log.Info("serving IPMI", "addr", conn.LocalAddr().String())
	err = srv.Serve(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ipmiHAL is the chassis as go-ipmi's hardware abstraction sees it.
type ipmiHAL struct {
	power Power
	sdr   *sdrStore
}

func (h *ipmiHAL) Chassis() hal.ChassisHAL { return ipmiChassis{h.power} }
func (h *ipmiHAL) Sensors() hal.SensorHAL  { return nil }
func (h *ipmiHAL) Storage() hal.StorageHAL { return h.sdr }
func (h *ipmiHAL) Network() hal.NetworkHAL { return nil }
func (h *ipmiHAL) GPIO() hal.GPIOHAL       { return nil }
func (h *ipmiHAL) I2C() hal.I2CHAL         { return nil }
func (h *ipmiHAL) Console() hal.ConsoleHAL { return nil }
func (h *ipmiHAL) Close() error            { return nil }

// ipmiChassis maps Chassis Control onto the chassis' power model: power
// down = off, power up = on, power cycle = cycle, hard reset = reset, soft
// shutdown (ACPI) = graceful shutdown.
type ipmiChassis struct{ p Power }

func (c ipmiChassis) PowerState(context.Context) (bool, error) { return c.p.PowerState() == On, nil }
func (c ipmiChassis) SetPower(ctx context.Context, on bool) error {
	if on {
		return c.p.PowerAction(ctx, ActionOn)
	}
	return c.p.PowerAction(ctx, ActionOff)
}
func (c ipmiChassis) PowerCycle(ctx context.Context) error { return c.p.PowerAction(ctx, ActionCycle) }
func (c ipmiChassis) ColdReset(ctx context.Context) error  { return c.p.PowerAction(ctx, ActionReset) }
func (c ipmiChassis) WarmReset(ctx context.Context) error  { return c.p.PowerAction(ctx, ActionSoftOff) }
func (c ipmiChassis) Identify(context.Context, uint8) error {
	return nil
}
func (c ipmiChassis) IntrusionState(context.Context) (bool, error) { return false, nil }
func (c ipmiChassis) SetBootFlags(context.Context, *types.BootOptionParam_BootFlags) error {
	return hal.ErrNotSupported
}
func (c ipmiChassis) GetBootFlags(context.Context) (*types.BootOptionParam_BootFlags, error) {
	return nil, hal.ErrNotSupported
}
func (c ipmiChassis) SetBootInfoAcknowledge(context.Context, *types.BootOptionParam_BootInfoAcknowledge) error {
	return nil
}
func (c ipmiChassis) GetBootInfoAcknowledge(context.Context) (*types.BootOptionParam_BootInfoAcknowledge, error) {
	return &types.BootOptionParam_BootInfoAcknowledge{}, nil
}

// sdrFactor is the M of y = M*raw for each kind (B = 0, exponents 0).
func sdrFactor(k SensorKind) float64 {
	switch k {
	case Fan:
		return 60 // RPM
	case PowerDraw:
		return 4 // W
	}
	return 1 // degrees C
}

func sdrRaw(k SensorKind, v float64) uint8 {
	return uint8(math.Max(0, math.Min(255, math.Round(v/sdrFactor(k)))))
}

// sdrStore is a read-only SDR repository holding one full sensor record
// per chassis sensor (record id = sensor number).
type sdrStore struct{ records map[uint16][]byte }

func newSDRStore() *sdrStore {
	s := &sdrStore{records: map[uint16][]byte{}}
	for _, sp := range chassisSensors {
		s.records[uint16(sp.Number)] = fullSensorRecord(sp)
	}
	return s
}

func fullSensorRecord(sp sensorSpec) []byte {
	unit, styp, entity := types.SensorUnitType_DegreesC, types.SensorTypeTemperature, types.EntityID(0x07) // system board
	switch sp.Kind {
	case Fan:
		unit, styp, entity = types.SensorUnitType_RPM, types.SensorTypeFan, 0x1d // fan device
	case PowerDraw:
		unit, styp, entity = types.SensorUnitType_Watts, types.SensorTypePowerSupply, 0x0a // power supply
	}
	if sp.Name == "CPU Temp" {
		entity = 0x03 // processor
	}
	th := types.Mask_Threshold{Readable: true, StatusReturned: true}
	full := &types.SDRFull{
		GeneratorID:    0x0020,
		SensorNumber:   types.SensorNumber(sp.Number),
		SensorEntityID: entity,
		SensorInitialization: types.SensorInitialization{
			InitScanning: true, InitEvents: true, EventGenerationEnabled: true, SensorScanningEnabled: true,
		},
		SensorCapabilities:     types.SensorCapabilities{AutoRearm: true, ThresholdAccess: types.SensorThresholdAccess_Readable},
		SensorType:             styp,
		SensorEventReadingType: types.EventReadingTypeThreshold,
		SensorUnit:             types.SensorUnit{BaseUnit: unit},
		ReadingFactors:         types.ReadingFactors{M: int16(sdrFactor(sp.Kind))},
		SensorMaxReadingRaw:    0xff,
		IDStringTypeLength:     types.TypeLength(0xC0 | byte(len(sp.Name))),
		IDStringBytes:          []byte(sp.Name),
	}
	if sp.UpperWarn > 0 {
		full.Mask.Threshold.UNC = th
		full.UNC_Raw = sdrRaw(sp.Kind, sp.UpperWarn)
	}
	if sp.UpperCrit > 0 {
		full.Mask.Threshold.UCR = th
		full.UCR_Raw = sdrRaw(sp.Kind, sp.UpperCrit)
	}
	if sp.LowerCrit > 0 {
		full.Mask.Threshold.LCR = th
		full.LCR_Raw = sdrRaw(sp.Kind, sp.LowerCrit)
	}
	return full.Pack(uint16(sp.Number))
}

func (s *sdrStore) FRU() hal.FRUStore { return nil }
func (s *sdrStore) SDR() hal.SDRStore { return s }

func (s *sdrStore) Read(_ context.Context, id uint16) ([]byte, error) {
	if r, ok := s.records[id]; ok {
		return append([]byte(nil), r...), nil
	}
	return nil, hal.ErrNotFound
}
func (s *sdrStore) Write(context.Context, uint16, []byte) error { return hal.ErrNotSupported }
func (s *sdrStore) Delete(context.Context, uint16) error        { return hal.ErrNotSupported }
func (s *sdrStore) RecordIDs(context.Context) ([]uint16, error) {
	ids := make([]uint16, 0, len(chassisSensors))
	for _, sp := range chassisSensors {
		ids = append(ids, uint16(sp.Number))
	}
	return ids, nil
}

func (h *ipmiHAL) reading(num uint8) (SensorReading, bool) {
	for _, r := range readSensors(h.power.PowerState() == On, time.Now()) {
		if r.spec.Number == num {
			return r, true
		}
	}
	return SensorReading{}, false
}

// getSensorReading answers Get Sensor Reading (Sensor/Event 0x2D, spec
// §35.14): the raw reading, scanning enabled, "reading unavailable" while
// the host is off, and the threshold comparison status.
func (h *ipmiHAL) getSensorReading(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	r, ok := h.reading(req[0])
	if !ok {
		return nil, types.CodeRequestedDataNotPresent, nil
	}
	flags := uint8(0xc0) // event messages and scanning enabled
	var status uint8
	if !r.Available {
		flags |= 0x20
	} else {
		sp := r.spec
		if sp.UpperWarn > 0 && r.Value >= sp.UpperWarn {
			status |= 0x08
		}
		if sp.UpperCrit > 0 && r.Value >= sp.UpperCrit {
			status |= 0x10
		}
		if sp.LowerCrit > 0 && r.Value <= sp.LowerCrit {
			status |= 0x02
		}
	}
	return []byte{sdrRaw(r.spec.Kind, r.Value), flags, status}, types.CodeOK, nil
}

// getSensorThresholds answers Get Sensor Thresholds (Sensor/Event 0x27).
func (h *ipmiHAL) getSensorThresholds(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	r, ok := h.reading(req[0])
	if !ok {
		return nil, types.CodeRequestedDataNotPresent, nil
	}
	sp := r.spec
	out := make([]byte, 7)
	if sp.LowerCrit > 0 {
		out[0] |= 0x02
		out[2] = sdrRaw(sp.Kind, sp.LowerCrit)
	}
	if sp.UpperWarn > 0 {
		out[0] |= 0x08
		out[4] = sdrRaw(sp.Kind, sp.UpperWarn)
	}
	if sp.UpperCrit > 0 {
		out[0] |= 0x10
		out[5] = sdrRaw(sp.Kind, sp.UpperCrit)
	}
	return out, types.CodeOK, nil
}
