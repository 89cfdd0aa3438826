package central

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/auth"
)

// Event is one change the fleet's live views (dashboard, CLI watchers) see.
type Event struct {
	ID   string          // "<epoch>-<n>": resumable within one central run
	Type string          // "subcloud", "subcloud-deleted"
	Data json.RawMessage // the resource as the REST API shows it
}

// Stream keeps the recent events in a bounded ring and wakes subscribers.
type Stream struct {
	epoch string

	mu   sync.Mutex
	next uint64  // number of the next event
	ring []Event // the most recent events, oldest first
	wake chan struct{}
}

const streamRing = 4096

// NewStream returns an empty stream with a fresh epoch.
func NewStream() *Stream {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Stream{epoch: hex.EncodeToString(b[:]), next: 1, wake: make(chan struct{})}
}

// Publish appends an event, wakes every subscriber and returns its ID.
func (s *Stream) Publish(typ string, v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	s.mu.Lock()
	ev := Event{ID: fmt.Sprintf("%s-%d", s.epoch, s.next), Type: typ, Data: data}
	s.next++
	s.ring = append(s.ring, ev)
	if len(s.ring) > streamRing {
		s.ring = s.ring[len(s.ring)-streamRing:]
	}
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
	return ev.ID
}

// Head is the ID of the newest event (epoch-0 before any): a new
// subscriber's cursor, so it misses nothing published after it connected.
func (s *Stream) Head() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%s-%d", s.epoch, s.next-1)
}

// Since returns the events after lastID and a channel closed at the next
// publish. ok is false when lastID cannot be resumed (another epoch, or
// older than the ring): the client must reload its view.
func (s *Stream) Since(lastID string) (events []Event, wake <-chan struct{}, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lastID == "" {
		return nil, s.wake, true
	}
	epoch, nstr, found := strings.Cut(lastID, "-")
	n, err := strconv.ParseUint(nstr, 10, 64)
	if !found || err != nil || epoch != s.epoch || n >= s.next {
		return nil, s.wake, false
	}
	first := s.next - uint64(len(s.ring)) // number of ring[0]
	if n+1 < first {
		return nil, s.wake, false
	}
	return append([]Event(nil), s.ring[n+1-first:]...), s.wake, true
}

// serveStream is GET /v1/stream: server-sent events, resumable with
// Last-Event-ID (or ?last_event_id); a comment every 15 s keeps proxies
// from closing the connection.
func (c *Central) serveStream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fl, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "streaming unsupported", http.StatusInternalServerError)
			return
		}
		last := r.Header.Get("Last-Event-ID")
		if last == "" {
			last = r.URL.Query().Get("last_event_id")
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "retry: 1000\n\n")
		if last == "" {
			last = c.stream.Head()
		}
		events, wake, ok := c.stream.Since(last)
		if !ok {
			fmt.Fprint(w, "event: reset\ndata: {}\n\n") // reload the whole view
			last = c.stream.Head()
			events, wake, _ = c.stream.Since(last)
		}
		beat := time.NewTicker(15 * time.Second)
		defer beat.Stop()
		for {
			for _, ev := range events {
				fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", ev.ID, ev.Type, ev.Data)
				last = ev.ID
			}
			fl.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-beat.C:
				// A revoked token, a logged-out session or a deleted user
				// ends the stream at the next beat.
				if _, err := c.shell.Auth.Require(auth.Reader)(r); err != nil {
					return
				}
				fmt.Fprint(w, ": keepalive\n\n")
				fl.Flush()
				events = nil
				continue
			case <-wake:
			}
			events, wake, ok = c.stream.Since(last)
			if !ok { // fell behind the ring
				fmt.Fprint(w, "event: reset\ndata: {}\n\n")
				last = c.stream.Head()
				events, wake, _ = c.stream.Since(last)
			}
		}
	})
}
