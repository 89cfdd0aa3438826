package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

// TestHistoryRetention: the running daemon trims its history to
// history.max_events, keeping what a registered reader still needs.
func TestHistoryRetention(t *testing.T) {
	cfg := servertest.Shell(t)
	cfg.Daemon = "central"
	cfg.History = server.HistoryConfig{MaxEvents: 1000, Interval: "1s"}
	s, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var floor uint64 = 300 // a reader that has handled 300 events
	floorSet := make(chan uint64, 1)
	floorSet <- floor
	s.AddLogFloor(func(context.Context) (uint64, error) {
		f := <-floorSet
		floorSet <- f
		return f, nil
	})
	servertest.Start(t, shell{s})
	ctx := context.Background()
	for range 1500 {
		id, _ := uuid.NewV7()
		if err := s.Events.AppendEvent(ctx, faultmgr.Event{UUID: id.String(), Type: faultmgr.EventLog, Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	count := func() (int, uint64) {
		recs, err := s.FaultLog.After(ctx, 0, 5000)
		if err != nil || len(recs) == 0 {
			t.Fatalf("history: %d records, %v", len(recs), err)
		}
		return len(recs), recs[0].Seq
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				n, first := count()
				t.Fatalf("%s: %d events kept, the oldest %d", what, n, first)
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
	}
	// The reader at 300 holds the count bound back: events 301.. stay.
	waitUntil("trimmed to the reader's floor", func() bool { _, first := count(); return first > 300 })
	if n, first := count(); first != 301 {
		t.Errorf("kept %d events from %d; want from 301 (the reader's floor)", n, first)
	}
	// Once the reader catches up, the count bound applies.
	<-floorSet
	floorSet <- 1500
	waitUntil("trimmed to max_events", func() bool { n, _ := count(); return n <= 1000 })
}
