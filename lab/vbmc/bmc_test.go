package vbmc_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/lab/vbmc"
	"github.com/petrel-edge/petrel/lab/vbmc/vbmctest"
)

// ipmitool runs the Debian ipmitool against s over lanplus with cipher
// suite cs; the password travels in a 0600 file (-f), never in argv.
func ipmitool(t *testing.T, s *vbmctest.Server, cs string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Skip("ipmitool not installed (Debian package ipmitool; scripts/test.sh installs it)")
	}
	host, port, _ := net.SplitHostPort(s.IPMI)
	pw := filepath.Join(t.TempDir(), "ipmi.pw")
	if err := os.WriteFile(pw, []byte(s.Credentials.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := []string{"-I", "lanplus", "-C", cs, "-N", "1", "-R", "2", "-H", host, "-p", port, "-U", s.Credentials.Username, "-f", pw}
	out, err := exec.CommandContext(ctx, "ipmitool", append(base, args...)...).CombinedOutput()
	return string(out), err
}

func TestIPMIWithIpmitool(t *testing.T) {
	p := vbmctest.NewPower(vbmc.Off)
	s := vbmctest.Start(t, p)
	for _, cs := range []string{"3", "17"} {
		t.Run("cipher-suite-"+cs, func(t *testing.T) {
			steps := []struct {
				args  []string
				want  string
				state string
			}{
				{[]string{"chassis", "power", "on"}, "Up/On", vbmc.On},
				{[]string{"chassis", "power", "status"}, "Chassis Power is on", vbmc.On},
				{[]string{"chassis", "power", "off"}, "Down/Off", vbmc.Off},
				{[]string{"chassis", "power", "status"}, "Chassis Power is off", vbmc.Off},
				{[]string{"chassis", "power", "cycle"}, "Cycle", vbmc.On},
				{[]string{"chassis", "power", "reset"}, "Reset", vbmc.On},
				{[]string{"chassis", "power", "soft"}, "Soft", vbmc.Off},
			}
			for _, st := range steps {
				out, err := ipmitool(t, s, cs, st.args...)
				if err != nil || !strings.Contains(out, st.want) {
					t.Fatalf("ipmitool -C %s %s = %q, %v; want %q", cs, strings.Join(st.args, " "), out, err, st.want)
				}
				if got := p.PowerState(); got != st.state {
					t.Fatalf("after ipmitool %s: power %s; want %s", strings.Join(st.args, " "), got, st.state)
				}
			}
		})
	}
	if got, want := p.Actions(), []vbmc.Action{"on", "off", "cycle", "reset", "soft"}; len(got) != 10 || !slices.Equal(got[:5], want) {
		t.Errorf("actions = %v; want %v twice", got, want)
	}

	t.Run("mc-info-and-sensors", func(t *testing.T) {
		out, err := ipmitool(t, s, "17", "mc", "info")
		if err != nil || !strings.Contains(out, "IPMI Version              : 2.0") {
			t.Fatalf("ipmitool mc info = %q, %v; want IPMI version 2.0", out, err)
		}
		out, err = ipmitool(t, s, "17", "chassis", "status")
		if err != nil || !strings.Contains(out, "System Power         : off") {
			t.Fatalf("ipmitool chassis status = %q, %v", out, err)
		}
		// Off: the CPU and its fan give no reading, inlet and standby power do.
		out, err = ipmitool(t, s, "3", "sdr", "list")
		if err != nil {
			t.Fatalf("ipmitool sdr list: %v\n%s", err, out)
		}
		for _, want := range []string{"Inlet Temp       | 22 degrees C      | ok", "CPU Temp         | no reading        | ns",
			"Fan1             | no reading        | ns", "Sys Power        | 8 Watts           | ok"} {
			if !strings.Contains(out, want) {
				t.Errorf("ipmitool sdr list (off) = %q; want a line %q", out, want)
			}
		}
		if _, err := ipmitool(t, s, "3", "chassis", "power", "on"); err != nil {
			t.Fatal(err)
		}
		out, err = ipmitool(t, s, "3", "sdr", "list")
		if err != nil || !strings.Contains(out, "RPM") || strings.Contains(out, "no reading") {
			t.Errorf("ipmitool sdr list (on) = %q, %v; want every sensor read, the fan in RPM", out, err)
		}
	})

	t.Run("cipher-suite-0-refused", func(t *testing.T) {
		before, state := len(p.Actions()), p.PowerState()
		out, err := ipmitool(t, s, "0", "chassis", "power", "cycle")
		if err == nil {
			t.Fatalf("ipmitool -C 0 chassis power cycle succeeded: %q; want it refused", out)
		}
		t.Logf("ipmitool -C 0: %s", out)
		if len(p.Actions()) != before || p.PowerState() != state {
			t.Errorf("ipmitool -C 0 changed the power: actions %v", p.Actions()[before:])
		}
	})

	t.Run("wrong-password-refused", func(t *testing.T) {
		bad := *s
		bad.Credentials.Password = "wrong"
		if out, err := ipmitool(t, &bad, "17", "chassis", "power", "status"); err == nil {
			t.Errorf("ipmitool with a wrong password = %q; want a refusal", out)
		}
	})
}

// redfishtool runs DMTF's redfishtool (Debian redfishtool) against s.
// redfishtool takes the password only in argv: a per-test random one on
// loopback.
func redfishtool(t *testing.T, s *vbmctest.Server, auth string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("redfishtool"); err != nil {
		t.Skip("redfishtool not installed (Debian package redfishtool; scripts/test.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"-r", s.RedfishAddr, "-S", "Always", "-u", s.Credentials.Username, "-p", s.Credentials.Password, "-A", auth, "-T", "10"}
	out, err := exec.CommandContext(ctx, "redfishtool", append(base, args...)...).CombinedOutput()
	return string(out), err
}

func TestRedfishWithRedfishtool(t *testing.T) {
	p := vbmctest.NewPower(vbmc.On)
	s := vbmctest.Start(t, p)
	for _, auth := range []string{"Session", "Basic"} {
		t.Run(auth, func(t *testing.T) {
			out, err := redfishtool(t, s, auth, "Systems", "get")
			if err != nil || !strings.Contains(out, `"PowerState": "On"`) {
				t.Fatalf("redfishtool Systems get = %q, %v; want PowerState On", out, err)
			}
			for _, st := range []struct{ reset, state string }{
				{"ForceOff", vbmc.Off}, {"On", vbmc.On}, {"ForceRestart", vbmc.On}, {"PowerCycle", vbmc.On},
				{"GracefulRestart", vbmc.On}, {"GracefulShutdown", vbmc.Off}, {"On", vbmc.On},
			} {
				out, err := redfishtool(t, s, auth, "Systems", "reset", st.reset)
				if err != nil {
					t.Fatalf("redfishtool Systems reset %s: %v\n%s", st.reset, err, out)
				}
				if got := p.PowerState(); got != st.state {
					t.Fatalf("after reset %s: power %s; want %s", st.reset, got, st.state)
				}
			}
			out, err = redfishtool(t, s, auth, "Chassis", "Thermal")
			if err != nil || !strings.Contains(out, `"CPU Temp"`) || !strings.Contains(out, `"ReadingUnits": "RPM"`) {
				t.Errorf("redfishtool Chassis Thermal = %q, %v; want CPU Temp and a fan", out, err)
			}
			out, err = redfishtool(t, s, auth, "Chassis", "Power")
			if err != nil || !strings.Contains(out, `"PowerConsumedWatts"`) {
				t.Errorf("redfishtool Chassis Power = %q, %v; want PowerConsumedWatts", out, err)
			}
		})
	}
	bad := *s
	bad.Credentials.Password = "wrong"
	if out, err := redfishtool(t, &bad, "Basic", "Systems", "get"); err == nil && strings.Contains(out, "PowerState") {
		t.Errorf("redfishtool with a wrong password = %q; want a refusal", out)
	}
}
