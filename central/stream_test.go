package central_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
)

func TestStreamResume(t *testing.T) {
	s := central.NewStream()
	var ids []string
	for i := range 4 {
		ids = append(ids, s.Publish("subcloud", map[string]int{"n": i}))
	}
	if head, _, ok := s.Since(s.Head()); !ok || len(head) != 0 {
		t.Fatalf("Since(Head()) = %d events, %v; want none, resumable", len(head), ok)
	}
	if fresh := central.NewStream(); fresh.Head() == "" {
		t.Error("an empty stream has no head cursor")
	} else if _, _, ok := fresh.Since(fresh.Head()); !ok {
		t.Error("an empty stream's head does not resume")
	}
	evs, _, ok := s.Since(ids[0])
	if !ok || len(evs) != 3 || evs[0].ID != ids[1] || !strings.Contains(string(evs[0].Data), `"n":1`) {
		t.Fatalf("Since(first) = %+v, %v; want the 2nd to 4th", evs, ok)
	}
	if evs, _, ok := s.Since(ids[3]); !ok || len(evs) != 0 {
		t.Errorf("Since(newest) = %d events, %v; want none, resumable", len(evs), ok)
	}
	epoch, _, _ := strings.Cut(ids[0], "-")
	for _, bad := range []string{"other-1", epoch + "-999", "garbage", central.NewStream().Publish("x", 0)} {
		if _, _, ok := s.Since(bad); ok {
			t.Errorf("Since(%q) resumed; want a reset", bad)
		}
	}
	// A client that fell behind the ring must reload.
	for i := range 5000 {
		s.Publish("subcloud", i)
	}
	if _, _, ok := s.Since(ids[0]); ok {
		t.Error("an ID older than the ring resumed; want a reset")
	}
	// A publish wakes a waiting subscriber.
	_, wake, _ := s.Since("")
	s.Publish("subcloud", 1)
	select {
	case <-wake:
	case <-time.After(time.Second):
		t.Fatal("publish did not wake the subscriber")
	}
}

func TestStreamOverHTTP(t *testing.T) {
	f := startCentral(t)
	req, _ := http.NewRequest(http.MethodGet, f.c.Shell().URL()+"/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+servertest.AdminToken(t, f.c))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := servertest.HTTPClient(t, f.c).Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("GET /v1/stream = %d %s", resp.StatusCode, ct)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if err := f.admin.Do(context.Background(), http.MethodPost, "/v1/subclouds", nil,
		central.CreateSubcloudRequest{Name: "site-live", Shape: inventory.Duplex}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	var got []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended; got %v", got)
			}
			got = append(got, l)
			if strings.HasPrefix(l, "data: ") && strings.Contains(l, `"name":"site-live"`) {
				if !strings.Contains(strings.Join(got, "\n"), "event: subcloud") {
					t.Errorf("event lines %v lack the event type", got)
				}
				return
			}
		case <-deadline:
			t.Fatalf("no event for the new subcloud within 5 s; got %v", got)
		}
	}
}

// TestOpenStreamDoesNotBlockShutdown: central stops promptly with a
// client still following /v1/stream.
func TestOpenStreamDoesNotBlockShutdown(t *testing.T) {
	c, err := central.New(context.Background(), central.Config{Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Shell().Ready()
	req, _ := http.NewRequest(http.MethodGet, c.Shell().URL()+"/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+servertest.AdminToken(t, c))
	resp, err := servertest.HTTPClient(t, c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v; want a clean stop", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("shutdown took %s with a stream open", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("central did not stop with a stream open")
	}
}
