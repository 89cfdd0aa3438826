package subcloud_test

import (
	"context"
	"encoding/base64"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/hostmgr/heartbeat"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// TestHeartbeatDrivesAvailability: a site with host maintenance pulses a
// host at the address its agent reported for its mgmt interface, with the
// key its report acknowledgement carried; answering makes the (locked)
// host online with mgmt ok; falling silent makes it offline,
// never recovered by force.
func TestHeartbeatDrivesAvailability(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	s0, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-hb", Shape: inventory.Simplex, Shell: servertest.Shell(t),
		Heartbeat: &subcloud.HeartbeatConfig{Port: port, Listen: map[string]string{"mgmt": "127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s0)
	s := site{s0, servertest.Client(t, s0, servertest.AdminToken(t, s0))}
	a := newAgent(t, s, s.joinToken(t), "")
	a.start(t)
	waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	a.cancel() // the test speaks for the agent from here
	<-a.done

	hc := agentClient(t, s, a.stateDir)
	hostAddr := "127.0.0.7"
	code, ack, body := sendReport(t, hc, s, a.MachineID(), inventory.Report{Full: true, BootID: "b", Generation: 50,
		Hardware: &inventory.Hardware{Cores: 4, NICs: []inventory.NIC{{Name: "mgmt", MAC: "02:00:00:00:00:07", Addresses: []string{hostAddr + "/8"}}}}})
	if code != 200 || ack.Heartbeat == nil || ack.Heartbeat.Port != port {
		t.Fatalf("report: %d %s; want an ack with the heartbeat configuration", code, body)
	}
	key, err := base64.StdEncoding.DecodeString(ack.Heartbeat.Key)
	if err != nil || len(key) != 32 {
		t.Fatalf("heartbeat key %q: %v", ack.Heartbeat.Key, err)
	}
	r, err := heartbeat.NewResponder(heartbeat.ResponderConfig{Host: uuid.MustParse(a.MachineID()), Key: key, Logger: servertest.Logger(t),
		Listen: map[heartbeat.Network]netip.AddrPort{heartbeat.Mgmt: netip.MustParseAddrPort(net.JoinHostPort(hostAddr, strconv.Itoa(port)))}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Heard, but locked (as every host is after joining): online, not in
	// service.
	h := waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Heartbeat.Mgmt == "ok" })
	if h.Availability != inventory.Online || h.Operational != inventory.Disabled {
		t.Errorf("answering locked host: %s/%s", h.Availability, h.Operational)
	}
	cancel()
	<-done
	h = waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Availability == inventory.Offline })
	if h.Heartbeat.Mgmt != "lost" {
		t.Errorf("silent host heartbeat %+v", h.Heartbeat)
	}
}
