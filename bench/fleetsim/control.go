package fleetsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The control API: plain HTTP on a unix socket (mode 0600 in the bench's
// own directory), so only the bench that started the simulator drives it.
//
//	GET  /status?since=UNIXNANO  -> Status
//	GET  /flavor?id=ID           -> FlavorTimes: when each site received it
//	POST /silence?on=true|false  body: site names, one a line

// Status is a simulator's counters.
type Status struct {
	Sites      int `json:"sites"`
	Connected  int `json:"connected"`
	Welcomed   int `json:"welcomed"` // sites welcomed at or after since
	Silenced   int `json:"silenced"`
	Dials      uint64
	DialErrors uint64 `json:"dial_errors"`
	Welcomes   uint64
	Updates    uint64
	Dropped    uint64 // update frames lost to simulated WAN loss
	Events     uint64 // event records sent (with resends)
	Cuts       uint64
	Goroutines int
}

// FlavorTimes is when each site that holds a flavor received its create.
type FlavorTimes struct {
	Held int     `json:"held"`
	At   []int64 `json:"at"` // unix nanoseconds
}

// Status reports the simulator's counters; Welcomed counts sites welcomed
// at or after since.
func (s *Sim) Status(since time.Time) Status {
	st := Status{Sites: len(s.sites), Dials: s.dials.Load(), DialErrors: s.dialErrs.Load(), Welcomes: s.welcomes.Load(),
		Updates: s.updates.Load(), Dropped: s.dropped.Load(), Events: s.events.Load(), Cuts: s.cuts.Load(),
		Goroutines: runtime.NumGoroutine()}
	for _, x := range s.sites {
		if x.connected.Load() {
			st.Connected++
		}
		if x.silenced.Load() {
			st.Silenced++
		}
		x.mu.Lock()
		if !x.lastWelcome.IsZero() && !x.lastWelcome.Before(since) {
			st.Welcomed++
		}
		x.mu.Unlock()
	}
	return st
}

// Flavor reports when each site received flavor id.
func (s *Sim) Flavor(id string) FlavorTimes {
	var ft FlavorTimes
	for _, x := range s.sites {
		x.mu.Lock()
		if t, ok := x.flavorAt[id]; ok {
			ft.Held++
			ft.At = append(ft.At, t.UnixNano())
		}
		x.mu.Unlock()
	}
	return ft
}

// Silence black-holes the named sites (on) or lets them reconnect.
func (s *Sim) Silence(names []string, on bool) int {
	n := 0
	for _, name := range names {
		if x := s.byNm[name]; x != nil {
			x.silence(on)
			n++
		}
	}
	return n
}

func (s *Sim) serveControl(ctx context.Context) {
	os.Remove(s.cfg.Control)
	ln, err := net.Listen("unix", s.cfg.Control)
	if err != nil {
		s.log.Error("control socket", "err", err)
		return
	}
	os.Chmod(s.cfg.Control, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		ns, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
		writeJSON(w, http.StatusOK, s.Status(time.Unix(0, ns)))
	})
	mux.HandleFunc("GET /flavor", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Flavor(r.URL.Query().Get("id")))
	})
	mux.HandleFunc("POST /silence", func(w http.ResponseWriter, r *http.Request) {
		var names []string
		if err := json.NewDecoder(r.Body).Decode(&names); err != nil {
			fail(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"sites": s.Silence(names, r.URL.Query().Get("on") == "true")})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	_ = srv.Serve(ln)
}

// Control drives a simulator process through its control socket.
type Control struct {
	hc *http.Client
}

// NewControl returns a client of the control socket at path.
func NewControl(path string) *Control {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Control{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *Control) do(ctx context.Context, method, path string, body any, out any) error {
	var rd *strings.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	} else {
		rd = strings.NewReader("")
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sim"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fleetsim control %s %s: %s", method, path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status asks for the simulator's counters.
func (c *Control) Status(ctx context.Context, since time.Time) (Status, error) {
	var st Status
	ns := int64(0)
	if !since.IsZero() {
		ns = since.UnixNano()
	}
	err := c.do(ctx, http.MethodGet, "/status?since="+strconv.FormatInt(ns, 10), nil, &st)
	return st, err
}

// Flavor asks when the simulator's sites received flavor id.
func (c *Control) Flavor(ctx context.Context, id string) (FlavorTimes, error) {
	var ft FlavorTimes
	err := c.do(ctx, http.MethodGet, "/flavor?id="+url.QueryEscape(id), nil, &ft)
	return ft, err
}

// Silence black-holes sites (on) or lets them reconnect.
func (c *Control) Silence(ctx context.Context, names []string, on bool) error {
	var out map[string]int
	if err := c.do(ctx, http.MethodPost, "/silence?on="+strconv.FormatBool(on), names, &out); err != nil {
		return err
	}
	if out["sites"] != len(names) {
		return errors.New("fleetsim: the simulator does not run every site named")
	}
	return nil
}

// Wait polls the control socket until it answers or limit passes.
func (c *Control) Wait(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		_, err := c.Status(ctx, time.Time{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fleetsim: control socket: %w", err)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}
