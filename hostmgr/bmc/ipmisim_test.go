package bmc_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/hostmgr/bmc"
)

// startIPMISim runs OpenIPMI's ipmi_sim (Debian openipmi) as a foreign BMC
// on a free UDP port of 127.0.0.1, with power emulated by a chassis
// control script (recipe: notes/libraries-bmc-etcd-gorm-openstack.md
// §5.1). It is stopped by PID when the test ends.
func startIPMISim(t *testing.T, password string) (addr string, powerFile string) {
	t.Helper()
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		t.Skip("ipmi_sim not installed (Debian package openipmi; scripts/test.sh installs it)")
	}
	dir := t.TempDir()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	powerFile = filepath.Join(dir, "power")
	ctl := filepath.Join(dir, "chassisctl.sh")
	script := `#!/bin/sh
S=` + powerFile + `; shift; op=$1; shift
case $op in
get) for p in "$@"; do case $p in power) echo "power:$(cat $S 2>/dev/null || echo 0)";; boot) echo "boot:default";;
        *) echo "Invalid parameter: $p"; exit 1;; esac; done;;
set) while [ $# -gt 0 ]; do p=$1; v=$2; shift 2; case $p in power) echo "$v" > $S;; reset|boot|shutdown|identify) :;;
        *) echo "Invalid parameter: $p"; exit 1;; esac; done;;
esac
`
	lan := `name "petreltest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 ` + strconv.Itoa(port) + `
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "` + ctl + ` 0x20"
  user 2 true "admin" "` + password + `" admin 10 none md2 md5 straight
`
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 0x09 0x08 0x9f 0x1291 0xf02\nmc_enable 0x20\n"
	for name, content := range map[string]string{"chassisctl.sh": script, "lan.conf": lan, "sim.emu": emu} {
		mode := os.FileMode(0o600)
		if name == "chassisctl.sh" {
			mode = 0o700
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", filepath.Join(dir, "state"))
	cmd.Dir = dir
	out, _ := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		out.Close()
	})
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), powerFile
}

// TestAgainstIPMISim: the IPMI client against a foreign BMC.
func TestAgainstIPMISim(t *testing.T) {
	addr, _ := startIPMISim(t, "simsecret")
	c := newClient(t, bmc.Config{Type: bmc.IPMI, IPMI: addr, Credentials: bmc.Credentials{Username: "admin", Password: "simsecret"}, Timeout: 5 * time.Second})
	ctx := t.Context()
	// ipmi_sim needs a moment to open its socket: poll with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	var st bmc.PowerState
	var err error
	for st, err = c.PowerState(ctx); err != nil && time.Now().Before(deadline); st, err = c.PowerState(ctx) {
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || st != bmc.PowerOff {
		t.Fatalf("PowerState = %q, %v; want off", st, err)
	}
	for _, step := range []struct {
		name string
		do   func() error
		want bmc.PowerState
	}{
		{"PowerOn", func() error { return c.PowerOn(ctx) }, bmc.PowerOn},
		{"Reset", func() error { return c.Reset(ctx) }, bmc.PowerOn},
		{"PowerOff", func() error { return c.PowerOff(ctx) }, bmc.PowerOff},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got, err := c.PowerState(ctx); err != nil || got != step.want {
			t.Fatalf("after %s: PowerState = %q, %v; want %q", step.name, got, err, step.want)
		}
	}
	// ipmi_sim's cycle is off now, on after 1 s.
	if err := c.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.PowerCycle(ctx); err != nil {
		t.Fatalf("PowerCycle: %v", err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for st, _ = c.PowerState(ctx); st != bmc.PowerOn && time.Now().Before(deadline); st, _ = c.PowerState(ctx) {
		time.Sleep(100 * time.Millisecond)
	}
	if st != bmc.PowerOn {
		t.Errorf("after PowerCycle: %q; want on again", st)
	}

	bad := newClient(t, bmc.Config{Type: bmc.IPMI, IPMI: addr, Credentials: bmc.Credentials{Username: "admin", Password: "wrong-pass"}, Timeout: 5 * time.Second})
	if _, err := bad.PowerState(ctx); !errors.Is(err, bmc.ErrAuth) {
		t.Errorf("PowerState with a wrong password = %v; want ErrAuth", err)
	}
	unknown := newClient(t, bmc.Config{Type: bmc.IPMI, IPMI: addr, Credentials: bmc.Credentials{Username: "nobody", Password: "simsecret"}, Timeout: 5 * time.Second})
	if _, err := unknown.PowerState(ctx); !errors.Is(err, bmc.ErrAuth) {
		t.Errorf("PowerState with an unknown user = %v; want ErrAuth", err)
	}
}
