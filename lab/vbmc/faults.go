package vbmc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// BMC fault modes: what the chassis' BMC protocols do instead of their
// job (lab faults bmc-down, bmc-slow, bmc-ignore). The unix-socket
// control path (the lab's own power-on/off) is never affected.
const (
	BMCFaultNone   = ""
	BMCFaultDown   = "down"   // power reads and actions never answer (the client times out)
	BMCFaultSlow   = "slow"   // every power read and action waits DelayMS first
	BMCFaultIgnore = "ignore" // power actions are accepted and not carried out
)

// BMCFault is the chassis' BMC fault (GET/PUT /v1/bmc-fault).
type BMCFault struct {
	Mode    string `json:"mode"`
	DelayMS int    `json:"delay_ms,omitempty"`
}

func (f BMCFault) valid() error {
	switch f.Mode {
	case BMCFaultNone, BMCFaultDown, BMCFaultIgnore:
		return nil
	case BMCFaultSlow:
		if f.DelayMS <= 0 || f.DelayMS > 600_000 {
			return fmt.Errorf("vbmc: bmc fault slow needs delay_ms in 1..600000")
		}
		return nil
	}
	return fmt.Errorf("vbmc: unknown bmc fault %q (down, slow, ignore, or empty)", f.Mode)
}

// faultyPower is the chassis as the BMC protocols see it, faults applied.
type faultyPower struct{ c *Chassis }

func (p faultyPower) fault() BMCFault {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.c.bmcFault
}

// stall applies down and slow; it reports false when the caller must not
// answer (down, or the request was abandoned).
func (p faultyPower) stall(ctx context.Context) bool {
	switch f := p.fault(); f.Mode {
	case BMCFaultDown:
		<-ctx.Done()
		return false
	case BMCFaultSlow:
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Duration(f.DelayMS) * time.Millisecond):
		}
	}
	return true
}

func (p faultyPower) PowerState() string {
	// A read carries no context through the Power interface: bound the
	// stall so a protocol goroutine is never held for good.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !p.stall(ctx) {
		return "unknown"
	}
	return p.c.PowerState()
}

func (p faultyPower) PowerAction(ctx context.Context, a Action) error {
	if !p.stall(ctx) {
		return fmt.Errorf("vbmc: no answer")
	}
	if p.fault().Mode == BMCFaultIgnore {
		p.c.log.Warn("BMC fault: ignoring a power action", "action", a)
		return nil
	}
	return p.c.PowerAction(ctx, a)
}

func (c *Chassis) faultHandlers(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/bmc-fault", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		f := c.bmcFault
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, f)
	})
	mux.HandleFunc("PUT /v1/bmc-fault", func(w http.ResponseWriter, r *http.Request) {
		var f BMCFault
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&f); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"mode\": \"down|slow|ignore|\", \"delay_ms\": N}"})
			return
		}
		if err := f.valid(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		c.mu.Lock()
		c.bmcFault = f
		c.mu.Unlock()
		c.log.Info("BMC fault set", "mode", f.Mode, "delay_ms", f.DelayMS)
		writeJSON(w, http.StatusOK, f)
	})
}

// BMCFault reads the chassis' BMC fault.
func (cl *Client) BMCFault(ctx context.Context) (BMCFault, error) {
	var f BMCFault
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://vbmc/v1/bmc-fault", nil)
	return f, cl.doJSON(req, &f)
}

// SetBMCFault sets the chassis' BMC fault (mode "" clears it).
func (cl *Client) SetBMCFault(ctx context.Context, f BMCFault) error {
	b, _ := json.Marshal(f)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://vbmc/v1/bmc-fault", strings.NewReader(string(b)))
	return cl.doJSON(req, nil)
}

func (cl *Client) doJSON(req *http.Request, out any) error {
	resp, err := cl.hc.Do(req)
	if err != nil {
		return fmt.Errorf("vbmc: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("vbmc: %s", e["error"])
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
