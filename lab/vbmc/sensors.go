package vbmc

import (
	"math"
	"time"
)

// SensorKind is what a sensor measures.
type SensorKind string

// Sensor kinds the chassis reports.
const (
	Temperature SensorKind = "temperature"
	Fan         SensorKind = "fan"
	PowerDraw   SensorKind = "power"
)

// sensorSpec is one simulated sensor: its reading while the host is on
// and while it is off (standby power; NaN: no reading while off, as a
// stopped fan or an unpowered CPU on a real board), and its thresholds
// (zero: none).
type sensorSpec struct {
	Number    uint8
	Name      string
	Kind      SensorKind
	Unit      string // Redfish/plain unit: "Cel", "RPM", "W"
	On, Off   float64
	Wobble    float64 // amplitude of a slow variation around On
	UpperWarn float64 // upper non-critical
	UpperCrit float64 // upper critical
	LowerCrit float64 // lower critical
}

// chassisSensors are the sensors of every lab chassis.
var chassisSensors = []sensorSpec{
	{Number: 1, Name: "Inlet Temp", Kind: Temperature, Unit: "Cel", On: 24, Off: 22, Wobble: 1, UpperWarn: 40, UpperCrit: 45},
	{Number: 2, Name: "CPU Temp", Kind: Temperature, Unit: "Cel", On: 48, Off: math.NaN(), Wobble: 3, UpperWarn: 85, UpperCrit: 95},
	{Number: 3, Name: "Fan1", Kind: Fan, Unit: "RPM", On: 6000, Off: math.NaN(), Wobble: 240, LowerCrit: 600},
	{Number: 4, Name: "Sys Power", Kind: PowerDraw, Unit: "W", On: 180, Off: 8, Wobble: 12, UpperWarn: 700, UpperCrit: 800},
}

// SensorReading is one sensor's current value.
type SensorReading struct {
	spec      sensorSpec
	Value     float64
	Available bool   // false: no reading (the host is off)
	Status    string // "ok", "warning", "critical"
}

// readSensors returns every sensor's reading for the power state at t.
func readSensors(on bool, t time.Time) []SensorReading {
	out := make([]SensorReading, 0, len(chassisSensors))
	for i, s := range chassisSensors {
		r := SensorReading{spec: s, Available: true, Status: "ok"}
		if on {
			// A slow, deterministic wander, different per sensor.
			phase := float64(t.UnixMilli())/60000*2*math.Pi + float64(i)
			r.Value = math.Round(s.On + s.Wobble*math.Sin(phase))
		} else {
			r.Value = s.Off
		}
		if math.IsNaN(r.Value) {
			r.Value, r.Available = 0, false
		}
		switch {
		case !r.Available:
		case s.UpperCrit > 0 && r.Value >= s.UpperCrit, s.LowerCrit > 0 && r.Value <= s.LowerCrit:
			r.Status = "critical"
		case s.UpperWarn > 0 && r.Value >= s.UpperWarn:
			r.Status = "warning"
		}
		out = append(out, r)
	}
	return out
}
