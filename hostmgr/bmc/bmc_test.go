package bmc_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/hostmgr/bmc"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/lab/vbmc"
	"github.com/petrel-edge/petrel/lab/vbmc/vbmctest"
)

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	p, err := pki.CertPool(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newClient(t *testing.T, cfg bmc.Config) *bmc.Client {
	t.Helper()
	c, err := bmc.New(cfg)
	if err != nil {
		t.Fatalf("bmc.New: %v", err)
	}
	return c
}

// TestAgainstVBMC drives every call over IPMI and over Redfish against
// the lab chassis' BMC and checks the effect on its power model.
func TestAgainstVBMC(t *testing.T) {
	for _, typ := range []bmc.Type{bmc.IPMI, bmc.Redfish} {
		t.Run(string(typ), func(t *testing.T) {
			p := vbmctest.NewPower(vbmc.Off)
			s := vbmctest.Start(t, p)
			c := newClient(t, bmc.Config{Type: typ, IPMI: s.IPMI, Redfish: s.RedfishURL(), Credentials: s.Credentials,
				CACerts: caPool(t, s.CACert), Timeout: 5 * time.Second})
			ctx := t.Context()
			steps := []struct {
				name string
				do   func(context.Context) error
				want bmc.PowerState
			}{
				{"PowerOn", c.PowerOn, bmc.PowerOn},
				{"Reset", c.Reset, bmc.PowerOn},
				{"PowerCycle", c.PowerCycle, bmc.PowerOn},
				{"GracefulShutdown", c.GracefulShutdown, bmc.PowerOff},
				{"PowerOn", c.PowerOn, bmc.PowerOn},
				{"PowerOff", c.PowerOff, bmc.PowerOff},
			}
			for _, st := range steps {
				if err := st.do(ctx); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				if got, err := c.PowerState(ctx); err != nil || got != st.want {
					t.Fatalf("after %s: PowerState = %q, %v; want %q", st.name, got, err, st.want)
				}
			}
			want := []vbmc.Action{vbmc.ActionOn, vbmc.ActionReset, vbmc.ActionCycle, vbmc.ActionSoftOff, vbmc.ActionOn, vbmc.ActionOff}
			if got := p.Actions(); !slices.Equal(got, want) {
				t.Errorf("actions on the chassis = %v; want %v", got, want)
			}
			// Off: CPU and fan have no reading; inlet and standby power do.
			ss, err := c.Sensors(ctx)
			if err != nil {
				t.Fatalf("Sensors: %v", err)
			}
			got := map[string]bmc.Sensor{}
			for _, s := range ss {
				got[s.Name] = s
			}
			if s := got["Inlet Temp"]; s.Kind != bmc.SensorTemperature || s.Value != 22 || s.Unit != "C" || s.Status != bmc.SensorOK {
				t.Errorf("Inlet Temp = %+v; want 22 C ok", s)
			}
			if s := got["Fan1"]; s.Kind != bmc.SensorFan || s.Status != bmc.SensorUnavailable {
				t.Errorf("Fan1 (host off) = %+v; want an unavailable fan", s)
			}
			if s := got["Sys Power"]; s.Kind != bmc.SensorPower || s.Value != 8 || s.Unit != "W" {
				t.Errorf("Sys Power (host off) = %+v; want 8 W", s)
			}
			if err := c.PowerOn(ctx); err != nil {
				t.Fatal(err)
			}
			ss, err = c.Sensors(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range ss {
				if s.Name == "Fan1" && (s.Value < 5000 || s.Status != bmc.SensorOK) {
					t.Errorf("Fan1 (host on) = %+v; want about 6000 RPM, ok", s)
				}
			}
		})
	}
}

// TestWrongCredentials: refused credentials are ErrAuth, the password is
// in no error text, and further calls are held without contacting the BMC.
func TestWrongCredentials(t *testing.T) {
	for _, typ := range []bmc.Type{bmc.IPMI, bmc.Redfish, bmc.Dynamic} {
		t.Run(string(typ), func(t *testing.T) {
			p := vbmctest.NewPower(vbmc.On)
			s := vbmctest.Start(t, p)
			bad := bmc.Credentials{Username: s.Credentials.Username, Password: "not-the-password-xyz"}
			c := newClient(t, bmc.Config{Type: typ, IPMI: s.IPMI, Redfish: s.RedfishURL(), Credentials: bad,
				CACerts: caPool(t, s.CACert), Timeout: 5 * time.Second})
			_, err := c.PowerState(t.Context())
			if !errors.Is(err, bmc.ErrAuth) {
				t.Fatalf("PowerState with a wrong password: err = %v; want ErrAuth", err)
			}
			if strings.Contains(err.Error(), bad.Password) {
				t.Errorf("error %q contains the password", err)
			}
			if h := bmc.RepairHint(err); !strings.Contains(h, "password") {
				t.Errorf("RepairHint = %q; want it to mention the password", h)
			}
			n := c.Attempts()
			if n != 1 {
				t.Errorf("attempts after an auth failure = %d; want 1 (no retry, no fallback)", n)
			}
			for range 3 {
				if err := c.PowerOff(t.Context()); !errors.Is(err, bmc.ErrAuth) {
					t.Fatalf("PowerOff while held: %v; want ErrAuth", err)
				}
			}
			if c.Attempts() != n || len(p.Actions()) != 0 {
				t.Errorf("held calls reached the BMC: attempts %d -> %d, actions %v", n, c.Attempts(), p.Actions())
			}
			c.SetCredentials(s.Credentials)
			if st, err := c.PowerState(t.Context()); err != nil || st != bmc.PowerOn {
				t.Errorf("PowerState after SetCredentials = %q, %v; want on", st, err)
			}
		})
	}
}

// silentUDP and silentTCP are endpoints that accept but never answer.
func silentUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func silentTCP(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestUnreachable(t *testing.T) {
	cr := bmc.Credentials{Username: "admin", Password: "secret"}
	for _, tc := range []struct {
		name string
		cfg  bmc.Config
	}{
		{"ipmi-silent", bmc.Config{Type: bmc.IPMI, IPMI: silentUDP(t)}},
		{"redfish-silent", bmc.Config{Type: bmc.Redfish, Redfish: "https://" + silentTCP(t) + "/redfish/v1"}},
		{"dynamic-silent", bmc.Config{Type: bmc.Dynamic, IPMI: silentUDP(t), Redfish: "https://" + silentTCP(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Credentials, tc.cfg.Timeout = cr, 600*time.Millisecond
			c := newClient(t, tc.cfg)
			start := time.Now()
			_, err := c.PowerState(t.Context())
			took := time.Since(start)
			if !errors.Is(err, bmc.ErrUnreachable) {
				t.Fatalf("PowerState = %v; want ErrUnreachable", err)
			}
			limit := 2 * time.Second
			if tc.cfg.Type == bmc.Dynamic {
				limit *= 2
			}
			if took > limit {
				t.Errorf("PowerState took %s; want it bounded by the %s timeout", took, tc.cfg.Timeout)
			}
			if errors.Is(err, bmc.ErrAuth) {
				t.Errorf("an unreachable BMC classified as an auth failure: %v", err)
			}
		})
	}
}

// TestDynamicFallsBackToIPMI: Redfish refused, IPMI answers; the next
// call goes to IPMI first.
func TestDynamicFallsBackToIPMI(t *testing.T) {
	p := vbmctest.NewPower(vbmc.On)
	s := vbmctest.Start(t, p)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	c := newClient(t, bmc.Config{Type: bmc.Dynamic, IPMI: s.IPMI, Redfish: "https://" + closed, Credentials: s.Credentials, Timeout: 5 * time.Second})
	if st, err := c.PowerState(t.Context()); err != nil || st != bmc.PowerOn {
		t.Fatalf("PowerState = %q, %v; want on through IPMI", st, err)
	}
	n := c.Attempts()
	if err := c.PowerOff(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c.Attempts() != n+1 {
		t.Errorf("second call made %d attempts; want 1 (IPMI first now)", c.Attempts()-n)
	}
}

// TestSlowBMCDoesNotBlockAnother: calls to a slow BMC queue behind each
// other (and are shed past the queue depth); another BMC answers at once.
func TestSlowBMCDoesNotBlockAnother(t *testing.T) {
	slowP, fastP := vbmctest.NewPower(vbmc.On), vbmctest.NewPower(vbmc.On)
	slow, fast := vbmctest.Start(t, slowP), vbmctest.Start(t, fastP)
	slowP.SetDelay(2 * time.Second)
	cs := newClient(t, bmc.Config{Type: bmc.IPMI, IPMI: slow.IPMI, Credentials: slow.Credentials, Timeout: 10 * time.Second, QueueDepth: 1})
	cf := newClient(t, bmc.Config{Type: bmc.IPMI, IPMI: fast.IPMI, Credentials: fast.Credentials, Timeout: 10 * time.Second})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 { // one in flight, one queued
		wg.Add(1)
		go func() { defer wg.Done(); _, err := cs.PowerState(t.Context()); errs <- err }()
	}
	// Wait until the slow BMC has a call in flight and one queued.
	deadline := time.Now().Add(5 * time.Second)
	for cs.Pending() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the slow BMC's queue never filled (pending %d)", cs.Pending())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cs.PowerOn(t.Context()); !errors.Is(err, bmc.ErrBusy) {
		t.Fatalf("a third call to the slow BMC = %v; want ErrBusy at once", err)
	}
	start := time.Now()
	if st, err := cf.PowerState(t.Context()); err != nil || st != bmc.PowerOn {
		t.Fatalf("fast BMC: PowerState = %q, %v", st, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the fast BMC took %s while the slow one was busy; want well under 1 s", took)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("slow BMC call: %v", err)
		}
	}
}

// TestTLSPinning: pinned on first use (OnPin), accepted again, and a
// different certificate is ErrTLSPinMismatch; a CA that did not issue the
// certificate is ErrTLSUntrusted.
func TestTLSPinning(t *testing.T) {
	p := vbmctest.NewPower(vbmc.On)
	s1, s2 := vbmctest.Start(t, p), vbmctest.Start(t, p)
	var pins []string
	c := newClient(t, bmc.Config{Type: bmc.Redfish, Redfish: s1.RedfishURL(), Credentials: s1.Credentials,
		OnPin: func(fp string) { pins = append(pins, fp) }, Timeout: 5 * time.Second})
	for range 2 {
		if _, err := c.PowerState(t.Context()); err != nil {
			t.Fatalf("PowerState: %v", err)
		}
	}
	if len(pins) != 1 || !strings.HasPrefix(pins[0], "sha256:") {
		t.Fatalf("OnPin calls = %v; want one sha256 fingerprint", pins)
	}
	// The same address now presents another certificate: s2 with s1's pin.
	c2 := newClient(t, bmc.Config{Type: bmc.Redfish, Redfish: s2.RedfishURL(), Credentials: s2.Credentials,
		Pinned: pins[0], Timeout: 5 * time.Second})
	_, err := c2.PowerState(t.Context())
	if !errors.Is(err, bmc.ErrTLSPinMismatch) {
		t.Fatalf("PowerState with a changed certificate = %v; want ErrTLSPinMismatch", err)
	}
	c3 := newClient(t, bmc.Config{Type: bmc.Redfish, Redfish: s2.RedfishURL(), Credentials: s2.Credentials,
		CACerts: caPool(t, s1.CACert), Timeout: 5 * time.Second})
	if _, err := c3.PowerState(t.Context()); !errors.Is(err, bmc.ErrTLSUntrusted) {
		t.Fatalf("PowerState against a foreign CA = %v; want ErrTLSUntrusted", err)
	}
}

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	f := dir + "/creds"
	if err := bmc.WriteCredentials(f, bmc.Credentials{Username: "u", Password: "p"}); err != nil {
		t.Fatal(err)
	}
	if c, err := bmc.LoadCredentials(f); err != nil || c.Username != "u" || c.Password != "p" {
		t.Fatalf("LoadCredentials = %v, %v", c, err)
	}
	if s := (bmc.Credentials{Username: "u", Password: "p4ss"}).String(); strings.Contains(s, "p4ss") {
		t.Errorf("Credentials.String() = %q shows the password", s)
	}
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bmc.LoadCredentials(f); !errors.Is(err, bmc.ErrInsecureCredentialsFile) {
		t.Errorf("LoadCredentials(0644 file) = %v; want ErrInsecureCredentialsFile", err)
	}
}
