package hostmgr

import "time"

// MNFA is multi-node failure avoidance: when several hosts fall silent
// within a short window (a switch died, not the hosts), every destructive
// action is held until they return.
type MNFA struct {
	Window time.Duration // default 2 s
	Min    int           // default 2

	silentSince map[string]time.Time
	episode     map[string]bool // hosts silent when the episode began or during it
}

// Active reports whether MNFA holds.
func (d *MNFA) Active() bool { return len(d.episode) > 0 }

func (d *MNFA) init() {
	if d.Window == 0 {
		d.Window = 2 * time.Second
	}
	if d.Min == 0 {
		d.Min = 2
	}
	if d.silentSince == nil {
		d.silentSince = map[string]time.Time{}
		d.episode = map[string]bool{}
	}
}

// Silent records that host fell silent on every network at at, and
// reports whether MNFA began.
func (d *MNFA) Silent(host string, at time.Time) bool {
	d.init()
	d.silentSince[host] = at
	if d.Active() {
		d.episode[host] = true
		return false
	}
	var recent []string
	for h, t := range d.silentSince {
		if at.Sub(t) <= d.Window {
			recent = append(recent, h)
		}
	}
	if len(recent) < d.Min {
		return false
	}
	for _, h := range recent {
		d.episode[h] = true
	}
	return true
}

// Back records that host is heard again (or was deleted), and reports
// whether MNFA ended: fewer than Min of its hosts are still silent.
func (d *MNFA) Back(host string) bool {
	d.init()
	delete(d.silentSince, host)
	if !d.Active() {
		return false
	}
	delete(d.episode, host)
	if len(d.episode) >= d.Min {
		return false
	}
	clear(d.episode)
	return true
}

// End ends an episode that was held too long: its hosts are treated as
// any silent host again.
func (d *MNFA) End() {
	d.init()
	clear(d.episode)
}
