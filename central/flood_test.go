package central_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/yamux"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

// startCentralLimits is startCentral with the given link limits.
func startCentralLimits(t *testing.T, limits central.LinkLimits) fleet {
	t.Helper()
	shell := servertest.Shell(t)
	c, err := central.New(context.Background(), central.Config{Shell: shell, SiteListen: "127.0.0.1:0", UpdateInterval: interval,
		LinkLimits: limits})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	return fleet{c: c, admin: plainClient(t, c, servertest.AdminToken(t, c)), dir: shell.DataDir}
}

// rawLink is a site's link spoken by the test itself: hello sent, welcome
// read.
type rawLink struct {
	ctl     *yamux.Stream
	welcome linkproto.Message
}

func openRawLink(t *testing.T, f fleet, cert, key, site, epoch string, sentAt time.Time) rawLink {
	t.Helper()
	sess, err := dialSession(t, f, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	ctl, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeHello, Site: site, Epoch: epoch,
		Protocols: []int{linkproto.Current}, SentAt: sentAt}); err != nil {
		t.Fatal(err)
	}
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	w, err := linkproto.Read(ctl)
	if err != nil || w.Type != linkproto.TypeWelcome {
		t.Fatalf("welcome: %+v %v", w, err)
	}
	ctl.SetReadDeadline(time.Time{})
	return rawLink{ctl: ctl, welcome: w}
}

// activeAlarm reports whether alarm id is active at central on entity.
func activeAlarm(t *testing.T, f fleet, id, entity string) bool {
	t.Helper()
	as, _, err := f.c.Shell().Alarms.Store().Alarms(context.Background(), page.Options{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.AlarmID == id && a.EntityInstanceID == entity {
			return true
		}
	}
	return false
}

// TestFloodingSiteIsSlowedAndAlarmed: a site sending updates as fast as
// it can is read no faster than its link limits and alarmed (280.007);
// it stays online (its updates arrive, slowed), a well-behaved site's
// updates go on being acknowledged at their pace meanwhile, and the
// alarm clears once the flooder has been within its limits for Calm.
func TestFloodingSiteIsSlowedAndAlarmed(t *testing.T) {
	const rate, burst = 100, 100
	f := startCentralLimits(t, central.LinkLimits{FrameRate: rate, FrameBurst: burst, Calm: time.Second})
	calmCert, calmKey := f.siteFiles(t, "calm")
	calm := f.startSite(t, "calm", calmCert, calmKey)
	f.waitAvailability(t, "calm", central.Online)
	cert, key := f.siteFiles(t, "flood")
	l := openRawLink(t, f, cert, key, "flood", "", time.Now().UTC())

	var acked atomic.Int64
	go func() {
		for {
			m, err := linkproto.Read(l.ctl)
			if err != nil {
				return
			}
			if m.Type == linkproto.TypeAck {
				acked.Add(1)
			}
		}
	}()
	// The flood: 600 updates with summaries at once (they fit the
	// stream's window: the writes do not wait for central).
	const flood = 600
	calmBefore := calm.Link().LastAcked
	start := time.Now()
	for seq := uint64(1); seq <= flood; seq++ {
		if err := linkproto.Write(l.ctl, linkproto.Message{Type: linkproto.TypeUpdate, Seq: seq,
			Summary: &linkproto.Summary{Hosts: int(seq % 7), Version: "v1"}, SentAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "280.007 raised for the flooding site", func() (bool, string) {
		return activeAlarm(t, f, central.AlarmFlooding, "subcloud=flood"), "not raised"
	})
	// Two seconds in: no more than the limits let through.
	for time.Since(start) < 2*time.Second {
		time.Sleep(10 * time.Millisecond) // polling the clock
	}
	got, elapsed := acked.Load(), time.Since(start)
	most := int64(burst + rate*elapsed.Seconds()*1.25 + 10)
	if got > most {
		t.Errorf("central acknowledged %d updates of the flooder in %s; want at most %d (its limits)", got, elapsed, most)
	}
	// The other site's updates went on at their pace (one per 250 ms).
	if n := calm.Link().LastAcked - calmBefore; n < 3 {
		t.Errorf("the well-behaved site had %d updates acknowledged during 2 s of flood; want its pace (≥ 3)", n)
	}
	// Every update arrives, slowed: (600 - burst) / rate ≥ 5.5 s.
	waitFor(t, "every update of the flooder acknowledged", func() (bool, string) {
		return acked.Load() == flood, fmt.Sprint(acked.Load(), " acknowledged")
	})
	took := time.Since(start)
	t.Logf("%d updates sent at once; central acknowledged %d within 2 s and all in %s (limit %d/s, burst %d)", flood, got, took.Round(time.Millisecond), rate, burst)
	if least := time.Duration(float64(flood-burst) / rate * 0.8 * float64(time.Second)); took < least {
		t.Errorf("central took %d updates in %s; want them slowed to its limit (≥ %s)", flood, took, least)
	}
	if activeAlarm(t, f, central.AlarmFlooding, "subcloud=calm") {
		t.Error("280.007 raised for the well-behaved site")
	}
	var sc central.Subcloud
	for _, s := range []string{"calm", "flood"} {
		if err := f.admin.Do(context.Background(), http.MethodGet, "/v1/subclouds/"+s, nil, nil, &sc); err != nil || sc.Availability != central.Online {
			t.Errorf("%s: %s %v; want online", s, sc.Availability, err)
		}
	}
	// Within the limits again: keepalives at the site's pace; the alarm
	// clears after Calm.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if linkproto.Write(l.ctl, linkproto.Message{Type: linkproto.TypeUpdate, SentAt: time.Now().UTC()}) != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	waitFor(t, "280.007 cleared after the flood", func() (bool, string) {
		return !activeAlarm(t, f, central.AlarmFlooding, "subcloud=flood"), "raised"
	})
}

// TestClockSkewDoesNotReorder: a site whose clock is hours off is judged
// by central's clock and its records by their sequence: an alarm raised
// "in the future" and cleared "in the past" ends cleared; one raised
// "five hours ago" after both is active; the site's last-seen time is
// central's; and central marks it offline on central's clock once it
// goes silent.
func TestClockSkewDoesNotReorder(t *testing.T) {
	f := startCentral(t)
	cert, key := f.siteFiles(t, "skewed")
	now := time.Now().UTC()
	ahead, behind := now.Add(3*time.Hour), now.Add(-3*time.Hour)
	l := openRawLink(t, f, cert, key, "skewed", "epoch-1", ahead)
	acks := make(chan linkproto.Message, 100)
	go func() {
		for {
			m, err := linkproto.Read(l.ctl)
			if err != nil {
				close(acks)
				return
			}
			acks <- m
		}
	}()
	raised, other := uuid.NewString(), uuid.NewString()
	ev := func(typ faultmgr.EventType, entity string, at time.Time) faultmgr.Event {
		return faultmgr.Event{UUID: uuid.NewString(), Type: typ, AlarmID: "200.001", EntityInstanceID: entity, Severity: "warning",
			ReasonText: entity + " is administratively locked", Timestamp: at, Site: "skewed"}
	}
	recs := []faultmgr.Record{
		{Seq: 1, Event: ev(faultmgr.EventSet, "host=worker-0", ahead), AlarmUUID: raised},
		{Seq: 2, Event: ev(faultmgr.EventClear, "host=worker-0", behind), AlarmUUID: raised},
		{Seq: 3, Event: ev(faultmgr.EventSet, "host=worker-1", now.Add(-5*time.Hour)), AlarmUUID: other},
	}
	if err := linkproto.Write(l.ctl, linkproto.Message{Type: linkproto.TypeEvents, Records: recs, SentAt: behind}); err != nil {
		t.Fatal(err)
	}
	// Updates stamped by the skewed clock, alternately ahead and behind.
	for seq := uint64(1); seq <= 4; seq++ {
		at := ahead
		if seq%2 == 0 {
			at = behind
		}
		if err := linkproto.Write(l.ctl, linkproto.Message{Type: linkproto.TypeUpdate, Seq: seq,
			Summary: &linkproto.Summary{Hosts: int(seq), Version: "v1"}, SentAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	var eventsAck uint64
	var lastAck uint64
	for deadline := time.After(10 * time.Second); eventsAck < 3 || lastAck < 4; {
		select {
		case m, ok := <-acks:
			if !ok {
				t.Fatal("central closed the link")
			}
			switch m.Type {
			case linkproto.TypeEventsAck:
				eventsAck = m.EventSeq
			case linkproto.TypeAck:
				lastAck = max(lastAck, m.Seq)
			case linkproto.TypeGoodbye:
				t.Fatalf("central said goodbye: %s", m.Reason)
			}
		case <-deadline:
			t.Fatalf("acknowledged: events to %d, updates to %d; want 3 and 4", eventsAck, lastAck)
		}
	}
	if activeAlarm(t, f, "200.001", "host=worker-0") {
		t.Error("host=worker-0's alarm is active: its clear (earlier timestamp, later sequence) was not applied after its raise")
	}
	if !activeAlarm(t, f, "200.001", "host=worker-1") {
		t.Error("host=worker-1's alarm (oldest timestamp, newest sequence) is not active")
	}
	// An update's acknowledgement means central read it; the registry
	// records it a moment later, off the link's read loop (linkWriter).
	waitFor(t, "the skewed site's last update in the registry on central's clock", func() (bool, string) {
		var sc central.Subcloud
		if err := f.admin.Do(context.Background(), http.MethodGet, "/v1/subclouds/skewed", nil, nil, &sc); err != nil {
			t.Fatal(err)
		}
		ok := sc.LastSeen != nil && sc.LastSeen.Sub(now).Abs() < time.Minute && sc.Hosts.Total == 4 && sc.Availability == central.Online
		return ok, fmt.Sprintf("last seen %v (central's clock ≈ %s), %d hosts (the last summary's: 4), %s",
			sc.LastSeen, now, sc.Hosts.Total, sc.Availability)
	})
	// Silent now: offline on central's clock (3 intervals), whatever the
	// site's clock said.
	silent := time.Now()
	f.waitAvailability(t, "skewed", central.Offline)
	if d := time.Since(silent); d > 10*time.Second {
		t.Errorf("offline %s after the site went silent; want about 3 intervals (%s)", d, 3*interval)
	}
}
