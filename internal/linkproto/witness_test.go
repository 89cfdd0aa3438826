package linkproto_test

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/petrel-edge/petrel/internal/linkproto"
)

func TestWitnessFramesRoundTrip(t *testing.T) {
	for _, m := range []linkproto.Message{
		{Type: linkproto.TypeWitnessHello, Site: "site-a", Controller: "controller-1", Protocols: []int{linkproto.Current}},
		{Type: linkproto.TypeWitnessRenew, Seq: 7, Renew: &linkproto.WitnessRenew{Controller: "controller-1",
			Role: linkproto.RoleStandby, Epoch: 4, LSN: 1 << 40}},
		{Type: linkproto.TypeWitnessState, Seq: 7, State: &linkproto.WitnessState{Holder: "controller-0", HolderEpoch: 4,
			Peer:       &linkproto.WitnessPeer{Name: "controller-0", Role: linkproto.RoleActive, Epoch: 4, LSN: 9, SeenAgoMs: -1, LeaseExpired: true},
			Superseded: true}},
		{Type: linkproto.TypeWitnessClaim, Seq: 8, Claim: &linkproto.WitnessClaim{Controller: "controller-1", Epoch: 5, LSN: 9, Reason: "peer gone"}},
		{Type: linkproto.TypeWitnessGrant, Seq: 8, Grant: &linkproto.WitnessGrant{Holder: "controller-0", HolderEpoch: 4, Reason: linkproto.RefusedHolderAlive}},
	} {
		var b bytes.Buffer
		if err := linkproto.Write(&b, m); err != nil {
			t.Fatal(err)
		}
		got, err := linkproto.Read(&b)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("Read(Write(%+v)) = %+v, %v", m, got, err)
		}
	}
}

func TestValidController(t *testing.T) {
	for name, want := range map[string]bool{"controller-0": true, "controller-1": true, "controller-12": true,
		"": false, "controller-": false, "controller-a": false, "Controller-0": false, "controller-0 ": false,
		"controller-0\n": false, "worker-0": false, "controller-" + strings.Repeat("9", 60): false} {
		if got := linkproto.ValidController(name); got != want {
			t.Errorf("ValidController(%q) = %v; want %v", name, got, want)
		}
	}
	for r, want := range map[linkproto.WitnessRole]bool{"active": true, "standby": true, "starting": true, "": false, "leader": false} {
		if got := r.Valid(); got != want {
			t.Errorf("WitnessRole(%q).Valid() = %v; want %v", r, got, want)
		}
	}
}

func TestTrimReason(t *testing.T) {
	if got := linkproto.TrimReason("short"); got != "short" {
		t.Errorf("TrimReason(short) = %q", got)
	}
	long := strings.Repeat("é", 200) // 400 bytes
	got := linkproto.TrimReason(long)
	if len(got) > 256 || !utf8.ValidString(got) || !strings.HasPrefix(long, got) {
		t.Errorf("TrimReason(400 bytes of é) = %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}
