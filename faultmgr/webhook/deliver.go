package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/version"
)

// Delivery types.
const (
	DeliveryEvent = "event" // an event from the log
	DeliveryTest  = "test"  // POST /v1/webhooks/{id}/test: no event
)

// Delivery is the JSON body of every POST to a receiver.
type Delivery struct {
	Type       string          `json:"type"`        // "event" or "test"
	DeliveryID string          `json:"delivery_id"` // the same on every attempt: receivers drop duplicates by it
	WebhookID  string          `json:"webhook_id"`
	Seq        uint64          `json:"seq"`   // the event's place in the daemon's event log
	Epoch      string          `json:"epoch"` // names the log; seq restarts only with a new epoch
	AlarmUUID  string          `json:"alarm_uuid,omitempty"`
	Event      *faultmgr.Event `json:"event,omitempty"`
}

// DeliveryID is the ID of the delivery of the event with UUID eventUUID to
// webhook webhookID: derived from both, so it is the same on every attempt,
// after a restart too.
func DeliveryID(webhookID, eventUUID string) string {
	ns, err := uuid.Parse(webhookID)
	if err != nil {
		ns = uuid.NameSpaceURL
	}
	return uuid.NewSHA1(ns, []byte(eventUUID)).String()
}

// saveInterval is how often a worker saves its progress while events flow.
const saveInterval = time.Second

// maxResponseRead bounds how much of a receiver's answer is read (and
// discarded) so the connection can be reused.
const maxResponseRead = 64 << 10

// statusError is a receiver's non-2xx answer.
type statusError struct {
	code       int
	retryAfter time.Duration
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("HTTP %d %s", e.code, http.StatusText(e.code))
	if e.code >= 300 && e.code < 400 {
		s += " (redirects are not followed)"
	}
	return s
}

// post makes one signed attempt and returns the HTTP status (0 without an
// answer); a non-2xx answer is an error.
func (m *Manager) post(ctx context.Context, target, secret string, d Delivery, event string, attempt int) (int, error) {
	body, err := json.Marshal(d)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "petrel-webhook/"+version.Get().Version)
	h.Set(HeaderWebhook, d.WebhookID)
	h.Set(HeaderDelivery, d.DeliveryID)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, Sign(secret, ts, d.DeliveryID, body))
	h.Set(HeaderAttempt, strconv.Itoa(attempt))
	h.Set(HeaderEvent, event)
	start := time.Now()
	resp, err := m.client.Do(req)
	m.met.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := &statusError{code: resp.StatusCode}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			se.retryAfter = time.Duration(s) * time.Second
		}
		return resp.StatusCode, se
	}
	return resp.StatusCode, nil
}

// backoff is the wait before attempt n+1 after n failed attempts: min
// doubled n-1 times, times a jitter factor in [0.75, 1.25), at least a
// receiver's Retry-After, and within [min, max].
func backoff(n int, minD, maxD, retryAfter time.Duration, jitter float64) time.Duration {
	d := maxD
	if n >= 1 && n <= 32 {
		if x := minD << (n - 1); x > 0 && x < maxD {
			d = x
		}
	}
	d = time.Duration(float64(d) * (0.75 + 0.5*jitter))
	d = max(d, retryAfter)
	return min(max(d, minD), maxD)
}

// worker delivers one webhook's events in log order.
type worker struct {
	m      *Manager
	hook   Webhook // as started: target and filter
	cancel context.CancelFunc
	done   chan struct{}
	cursor atomic.Uint64 // for the lag metric
	epoch  string
}

func (m *Manager) startWorker(ctx context.Context, w Webhook) *worker {
	ctx, cancel := context.WithCancel(ctx)
	wk := &worker{m: m, hook: w, cancel: cancel, done: make(chan struct{})}
	wk.cursor.Store(w.Status.Cursor)
	go func() {
		defer close(wk.done)
		wk.run(ctx)
	}()
	return wk
}

func (wk *worker) stop() {
	wk.cancel()
	<-wk.done
}

// sameTarget reports whether w delivers where and what the worker does.
func (wk *worker) sameTarget(w Webhook) bool {
	return w.URL == wk.hook.URL && reflect.DeepEqual(w.Filter, wk.hook.Filter)
}

func (wk *worker) run(ctx context.Context) {
	m, id := wk.m, wk.hook.ID
	lg := m.log.With("webhook", id)
	// The store, not the snapshot: a worker this one replaces saved its
	// progress when it stopped.
	w, err := m.cfg.Store.Webhook(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			lg.Warn("webhook not started", "err", err)
		}
		return
	}
	st, cursor := w.Status, w.Status.Cursor
	wk.epoch = m.cfg.Log.Epoch()
	if w.Epoch != wk.epoch {
		// The log was created anew: its numbers restart, and so does the cursor.
		lg.Info("event log has a new epoch; delivering it from its start", "old_epoch", w.Epoch, "epoch", wk.epoch)
		cursor, st.Cursor = 0, 0
	}
	wk.cursor.Store(cursor)
	// Progress is saved at most once a second while events flow (a crash
	// resends at most that second's deliveries, with their IDs), at once
	// on a failure, and when the worker stops.
	saved, savedAt := st, time.Time{}
	save := func(ctx context.Context, force bool) {
		st.Cursor = cursor
		if st == saved || (!force && time.Since(savedAt) < saveInterval) {
			return
		}
		if err := m.cfg.Store.SaveWebhookStatus(ctx, id, wk.epoch, st); err != nil {
			lg.Warn("webhook progress not saved", "err", err)
			return
		}
		saved, savedAt = st, time.Now()
	}
	defer func() {
		// Stopping: keep what was acknowledged, so a restart does not resend it.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		save(sctx, true)
	}()
	var secret string
	for attempt := 1; secret == ""; attempt++ {
		if secret, err = m.secret(ctx, id); err != nil {
			if ctx.Err() != nil {
				return
			}
			lg.Error("webhook cannot sign", "err", err)
			now := time.Now().UTC()
			st.ConsecutiveFailures++
			st.LastError, st.LastErrorAt, st.LastAttemptAt = "cannot sign: the signing secret does not open", &now, &now
			save(ctx, true)
			if !sleep(ctx, backoff(attempt, m.cfg.MinBackoff, m.cfg.MaxBackoff, 0, rand.Float64())) {
				return
			}
		}
	}
	for {
		head, next := m.cfg.Log.Watch()
		if cursor >= head {
			save(ctx, false)
			select {
			case <-ctx.Done():
				return
			case <-next:
				continue
			case <-time.After(saveInterval): // idle: save what the throttle held back
				save(ctx, true)
				continue
			}
		}
		recs, err := m.cfg.Log.After(ctx, cursor, m.cfg.Batch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			lg.Warn("event log not read", "err", err)
			if !sleep(ctx, m.cfg.MinBackoff) {
				return
			}
			continue
		}
		if len(recs) == 0 { // everything up to head was trimmed
			st.Missed += head - cursor
			lg.Warn("events trimmed from the history before delivery", "missed", head-cursor)
			cursor = head
			wk.cursor.Store(cursor)
			continue
		}
		for _, r := range recs {
			if r.Seq != cursor+1 {
				st.Missed += r.Seq - cursor - 1
				lg.Warn("events trimmed from the history before delivery", "missed", r.Seq-cursor-1, "after", cursor)
			}
			if w.Filter.Match(r.Event) {
				if !wk.deliver(ctx, lg, w.URL, secret, r, &st, func() { save(ctx, true) }) {
					return
				}
			}
			cursor = r.Seq
			wk.cursor.Store(cursor)
		}
		save(ctx, false)
	}
}

// deliver sends r until the receiver acknowledges it (true) or ctx ends
// (false). Failures are recorded in st and saved as they happen.
func (wk *worker) deliver(ctx context.Context, lg *slog.Logger, target, secret string, r faultmgr.Record, st *Status, save func()) bool {
	m, id := wk.m, wk.hook.ID
	ev := r.Event
	d := Delivery{Type: DeliveryEvent, DeliveryID: DeliveryID(id, ev.UUID), WebhookID: id, Seq: r.Seq,
		Epoch: wk.epoch, AlarmUUID: r.AlarmUUID, Event: &ev}
	for attempt := 1; ; attempt++ {
		_, err := m.post(ctx, target, secret, d, string(ev.Type), attempt)
		now := time.Now().UTC()
		st.LastAttemptAt = &now
		if err == nil {
			if st.ConsecutiveFailures > 0 {
				lg.Info("webhook delivering again", "after_failures", st.ConsecutiveFailures)
			}
			st.ConsecutiveFailures, st.LastSuccessAt = 0, &now
			st.Delivered++
			m.met.ok(id)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		m.met.failed(id)
		st.ConsecutiveFailures++
		st.LastError, st.LastErrorAt = err.Error(), &now
		save()
		var retryAfter time.Duration
		if se, ok := err.(*statusError); ok {
			retryAfter = se.retryAfter
		}
		wait := backoff(attempt, m.cfg.MinBackoff, m.cfg.MaxBackoff, retryAfter, rand.Float64())
		// Loud on the first failure and then at doubling intervals, not on every retry.
		if attempt&(attempt-1) == 0 {
			lg.Warn("webhook delivery failed; retrying", "seq", r.Seq, "delivery", d.DeliveryID, "attempt", attempt,
				"retry_in", wait.String(), "err", err)
		}
		if !sleep(ctx, wait) {
			return false
		}
	}
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
