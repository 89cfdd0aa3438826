package central

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// LinkLimits bound what one site's link may send central: frames of any
// kind, and event records. A site over them is slowed (central reads its
// link no faster than the limits: TCP pushes back on the site) and
// alarmed (280.007) until it has been within them for Calm. Its updates
// still arrive, in order, so it is not marked offline; other sites'
// links, each read by its own goroutine, are not affected. A healthy site
// sends an update every interval and its events in batches: far below.
type LinkLimits struct {
	// FrameRate is frames per second, FrameBurst the frames at once;
	// zero: 20/s and 200.
	FrameRate  float64
	FrameBurst int
	// RecordRate is event records per second, RecordBurst at once (a
	// site's backlog after a long outage); zero: 2,000/s and 50,000.
	RecordRate  float64
	RecordBurst int
	// Calm is how long a site must stay within the limits for its alarm
	// to clear; zero: 1 minute.
	Calm time.Duration
}

func (l *LinkLimits) defaults() {
	if l.FrameRate <= 0 {
		l.FrameRate = 20
	}
	if l.FrameBurst <= 0 {
		l.FrameBurst = 200
	}
	if l.RecordRate <= 0 {
		l.RecordRate = 2000
	}
	if l.RecordBurst <= 0 {
		l.RecordBurst = 50000
	}
	if l.Calm <= 0 {
		l.Calm = time.Minute
	}
}

// AlarmFlooding is raised for a site whose link sends more than
// LinkLimits allow.
const AlarmFlooding = "280.007"

// linkThrottle is one link's limiters and alarm state (used by the link's
// read loop only).
type linkThrottle struct {
	c               *Central
	site            string
	frames, records *rate.Limiter
	// alarmed: 280.007 may be raised for the site. A new link starts so
	// (an earlier link or run of central may have raised it): Calm within
	// the limits clears it, a no-op if it is not raised.
	alarmed   bool
	lastOver  time.Time
	throttled int // frames delayed in this episode
}

func (c *Central) newLinkThrottle(site string) *linkThrottle {
	l := c.cfg.LinkLimits
	return &linkThrottle{c: c, site: site, frames: rate.NewLimiter(rate.Limit(l.FrameRate), l.FrameBurst),
		records: rate.NewLimiter(rate.Limit(l.RecordRate), l.RecordBurst), alarmed: true, lastOver: time.Now()}
}

// admit waits until the link may go on with a frame carrying records
// event records: at once while the site is within its limits. It raises
// 280.007 when the site first goes over them and clears it once the
// site has been within them for Calm. The wait ends early with ctx.
func (t *linkThrottle) admit(ctx context.Context, records int) error {
	now := time.Now()
	fr := t.frames.ReserveN(now, 1)
	delay := fr.DelayFrom(now)
	if records > 0 {
		// A frame larger than the burst is let through at the burst's cost:
		// it still waits for a full bucket.
		rr := t.records.ReserveN(now, min(records, t.records.Burst()))
		delay = max(delay, rr.DelayFrom(now))
	}
	if delay <= 0 {
		if t.alarmed && now.Sub(t.lastOver) >= t.c.cfg.LinkLimits.Calm {
			t.alarmed = false
			cleared, err := t.c.shell.Alarms.Clear(ctx, AlarmFlooding, "subcloud="+t.site)
			if err != nil {
				t.alarmed = true // again at the next frame
				t.c.log.Error("clearing "+AlarmFlooding+" failed", "site", t.site, "err", err)
			} else if cleared {
				t.c.log.Info("site back within its link limits", "site", t.site, "frames_delayed", t.throttled)
			}
			t.throttled = 0
		}
		return nil
	}
	t.lastOver = now
	t.throttled++
	t.c.linkThrottled.Inc()
	if t.throttled == 1 {
		t.alarmed = true
		l := t.c.cfg.LinkLimits
		detail := fmt.Sprintf("over %g frames/s or %g event records/s; its link is slowed to those rates", l.FrameRate, l.RecordRate)
		t.c.log.Warn("site over its link limits: slowed and alarmed", "site", t.site, "frame_rate", l.FrameRate, "record_rate", l.RecordRate)
		if _, _, err := t.c.shell.Alarms.Raise(ctx, AlarmFlooding, "subcloud="+t.site, map[string]string{"detail": detail}); err != nil {
			t.c.log.Error("raising "+AlarmFlooding+" failed", "site", t.site, "err", err)
		}
	}
	timer := time.NewTimer(delay) // the rate limit itself, not a wait for an event
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
