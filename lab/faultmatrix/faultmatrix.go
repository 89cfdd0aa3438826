// Package faultmatrix drives seeded, repeatable fault sequences against a
// lab site's controller pair (docs/ha.md) and checks the pair's two
// invariants throughout: never two active controllers (the observer: each
// controller's role, and who holds the floating API address, every
// 50 ms), and never a lost acknowledged write (a writer through the
// floating address; every write the API acknowledged must be in the
// site's database at the end).
//
// A step injects one fault (or two at once), holds it, heals everything,
// and waits for the pair to be ok again. The faults: power loss, hang
// (SIGSTOP of every process: the cgroup frozen) and crash of either
// controller; its links down per network or on both (a symmetric
// partition), one-way loss toward the peer, a flapping link; its BMC
// down; the site's WAN link to central (the witness) cut; and the WAN cut
// together with the active's power loss (the BMC race).
package faultmatrix

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/ackwriter"
	"github.com/petrel-edge/petrel/lab/observer"
	"github.com/petrel-edge/petrel/subcloud/ctlha"
)

// Kinds are the faults a step draws from.
var Kinds = []string{
	"power-off", "hang", "crash", "link-down-mgmt", "link-down-cluster", "partition", "oneway",
	"flap", "bmc-down", "central-down", "central-down+power-off",
}

// Step is one fault of a sequence.
type Step struct {
	Kind   string `json:"kind"`
	Target string `json:"target"` // "active" or "standby" (resolved when the step runs)
	Host   string `json:"host"`   // the controller it hit
	// Recovered: how long after the heal the pair was ok again.
	Recovered time.Duration `json:"recovered_ns"`
	Err       string        `json:"err,omitempty"`
}

// Plan is the sequence of a seed: the same seed gives the same steps.
func Plan(seed uint64, steps int) []Step {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]Step, steps)
	for i := range out {
		out[i].Kind = Kinds[r.IntN(len(Kinds))]
		out[i].Target = "active"
		if r.IntN(3) == 0 && out[i].Kind != "central-down" && out[i].Kind != "central-down+power-off" {
			out[i].Target = "standby"
		}
	}
	return out
}

// Config configures a run.
type Config struct {
	Lab  *lab.File
	Site int // index in Lab.Sites; its shape must be duplex or multi-server
	Seed uint64
	// Steps per seed; Hold is how long each fault lasts (default 4 s);
	// RecoverWithin bounds the wait for the pair to be ok after a heal
	// (default 120 s).
	Steps         int
	Hold          time.Duration
	RecoverWithin time.Duration
	Log           io.Writer
}

// rowTrail reads the decision rows a controller's site controller log
// gained since the last call.
type rowTrail struct {
	path string
	off  int64
}

// decisionRow finds a pair decision's row in a log line.
var decisionRow = regexp.MustCompile(`"msg":"decision".*"decision":"([DF][0-9]+) `)

func (r *rowTrail) next() []string {
	fh, err := os.Open(r.path)
	if err != nil {
		return []string{"(no log: " + err.Error() + ")"}
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.Size() < r.off {
		r.off = 0 // rotated or replaced
	}
	if _, err := fh.Seek(r.off, io.SeekStart); err != nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(fh, 16<<20))
	if err != nil {
		return nil
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1] // a line being written is read next time
	} else {
		b = nil
	}
	r.off += int64(len(b))
	var out []string
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		if m := decisionRow.FindSubmatch(l); m != nil {
			out = append(out, string(m[1]))
		}
	}
	return out
}

// Report is what a run saw.
type Report struct {
	Seed       uint64               `json:"seed"`
	Steps      []Step               `json:"steps"`
	Acked      int                  `json:"acked"`
	Lost       []string             `json:"lost,omitempty"`
	Violations []observer.Violation `json:"violations,omitempty"`
	Stuck      int                  `json:"stuck"` // steps after which the pair did not recover
}

// Safe reports whether the invariants held: no split brain, no lost write.
func (r Report) Safe() bool { return len(r.Lost) == 0 && len(r.Violations) == 0 }

// Run runs one seed's steps against the site.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Hold <= 0 {
		cfg.Hold = 4 * time.Second
	}
	if cfg.RecoverWithin <= 0 {
		cfg.RecoverWithin = 120 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	f := cfg.Lab
	se := f.Sites[cfg.Site]
	rep := Report{Seed: cfg.Seed, Steps: Plan(cfg.Seed, cfg.Steps)}
	api, err := client.New(client.Config{URL: se.URL, CACert: f.CACert, Token: se.Token})
	if err != nil {
		return rep, err
	}
	var controllers []lab.HostEntry
	var targets []observer.Target
	for _, h := range se.Hosts {
		if h.Personality != "controller" {
			continue
		}
		controllers = append(controllers, h)
		targets = append(targets, observer.Target{Host: h.Name, Netns: h.Netns,
			URL: "http://" + net.JoinHostPort(h.Addresses["cluster"], strconv.Itoa(ctlha.StatusPort)) + "/"})
	}
	if len(controllers) != 2 {
		return rep, fmt.Errorf("faultmatrix: site %s has %d controllers; a pair has 2", se.Name, len(controllers))
	}
	pair := func() (status, active string) {
		var g struct {
			Status  string
			Members []struct{ Host, State string }
		}
		if err := api.Do(ctx, http.MethodGet, "/v1/service-groups/"+ctlha.PairGroup, nil, nil, &g); err != nil {
			return "", ""
		}
		for _, m := range g.Members {
			if m.State == "active" {
				active = m.Host
			}
		}
		return g.Status, active
	}
	waitOK := func(limit time.Duration) (string, error) {
		deadline := time.Now().Add(limit)
		for {
			st, act := pair()
			if st == "ok" && act != "" {
				return act, nil
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("the pair is not ok within %s (status %q)", limit, st)
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(200 * time.Millisecond): // polling
			}
		}
	}
	active, err := waitOK(cfg.RecoverWithin)
	if err != nil {
		return rep, err
	}
	obs, err := observer.New(observer.Config{Members: targets, N: 1, Group: ctlha.PairGroup,
		Floating: []string{floatingOf(f, cfg.Site)}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return rep, err
	}
	octx, stop := context.WithCancel(ctx)
	obsDone := make(chan struct{})
	go func() { defer close(obsDone); obs.Run(octx) }()
	w := ackwriter.New(api, fmt.Sprintf("seed-%d-%d", cfg.Seed, time.Now().UnixNano()), 50*time.Millisecond)
	wDone := make(chan struct{})
	go func() { defer close(wDone); w.Run(octx) }()
	defer func() { stop(); <-obsDone; <-wDone }()

	rows := make([]*rowTrail, len(controllers))
	for i, c := range controllers {
		rows[i] = &rowTrail{path: filepath.Join(f.Dir, "hosts", se.Name, c.Name, "logs", "subcloud.log")}
		rows[i].next() // what came before the run is not this run's
	}
	fault := func(kind, target, netName string) {
		if err := lab.Fault(ctx, f.Dir, kind, target, netName, 0, 0); err != nil {
			fmt.Fprintf(cfg.Log, "  %s %s %s: %v\n", kind, target, netName, err)
		}
	}
	heal := func() {
		for _, c := range controllers {
			t := se.Name + "/" + c.Name
			fault("resume", t, "")
			fault("link-up", t, "all")
			fault("clear", t, "")
			fault("power-on", t, "")
		}
		fault("clear", se.Name, "")
	}
	for i := range rep.Steps {
		s := &rep.Steps[i]
		standby := controllers[0].Name
		if standby == active {
			standby = controllers[1].Name
		}
		s.Host = active
		if s.Target == "standby" {
			s.Host = standby
		}
		peer := active
		if s.Host == active {
			peer = standby
		}
		t := se.Name + "/" + s.Host
		fmt.Fprintf(cfg.Log, "seed %d step %d: %s of the %s (%s)\n", cfg.Seed, i+1, s.Kind, s.Target, s.Host)
		switch s.Kind {
		case "power-off", "hang", "crash", "bmc-down":
			fault(s.Kind, t, "")
		case "link-down-mgmt":
			fault("link-down", t, "mgmt")
		case "link-down-cluster":
			fault("link-down", t, "cluster")
		case "partition":
			fault("link-down", t, "all")
		case "oneway":
			if err := lab.FaultOneWay(ctx, f.Dir, t, se.Name+"/"+peer, "all", 100); err != nil {
				fmt.Fprintf(cfg.Log, "  oneway: %v\n", err)
			}
		case "flap":
			for range 4 {
				fault("link-down", t, "mgmt")
				sleep(ctx, cfg.Hold/8)
				fault("link-up", t, "mgmt")
				sleep(ctx, cfg.Hold/8)
			}
		case "central-down":
			fault("partition", se.Name, "")
		case "central-down+power-off":
			fault("partition", se.Name, "")
			fault("power-off", t, "")
		}
		sleep(ctx, cfg.Hold)
		healed := time.Now()
		heal()
		act, err := waitOK(cfg.RecoverWithin)
		s.Recovered = time.Since(healed)
		if err != nil {
			s.Err = err.Error()
			rep.Stuck++
			fmt.Fprintf(cfg.Log, "  not recovered: %v\n", err)
			// One more heal, then go on from whatever state it is in.
			heal()
			if act, err = waitOK(cfg.RecoverWithin); err != nil {
				break
			}
		}
		active = act
		fmt.Fprintf(cfg.Log, "  ok again %s after the heal; %s active\n", s.Recovered.Round(time.Millisecond), active)
		for i, c := range controllers {
			// The decision rows each controller took in the step (docs/ha.md):
			// what a failed seed's report is read by.
			decided := strings.Join(rows[i].next(), " ")
			if decided == "" {
				decided = "nothing new (stays are logged at debug level)"
			}
			fmt.Fprintf(cfg.Log, "  %s decided %s\n", c.Name, decided)
		}
		if ctx.Err() != nil {
			break
		}
	}
	stop()
	<-wDone
	<-obsDone
	rep.Acked, _, _ = w.Stats()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if rep.Lost, err = w.Check(cctx); err != nil {
		return rep, fmt.Errorf("faultmatrix: checking the writes: %w", err)
	}
	rep.Violations = obs.Violations()
	return rep, nil
}

func floatingOf(f *lab.File, site int) string { return lab.FloatingAddr(site).String() }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
