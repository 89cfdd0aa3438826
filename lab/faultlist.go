package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/lab/vbmc"
)

// ActiveFault is a fault in effect (petrel lab fault list).
type ActiveFault struct {
	Target string `json:"target"` // SITE/HOST or SITE (its WAN link)
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// faultsFile records injected faults that no probe can read back.
const faultsFile = "faults.json"

var faultsMu sync.Mutex

// lockFaults serialises readers and writers of the record across
// processes (concurrent `petrel lab fault` commands) with flock.
func lockFaults(dir string) (func(), error) {
	faultsMu.Lock()
	f, err := os.OpenFile(filepath.Join(dir, stateDir, faultsFile+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		faultsMu.Unlock()
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		faultsMu.Unlock()
		return nil, err
	}
	return func() { f.Close(); faultsMu.Unlock() }, nil
}

// recordFault keeps the record of faults in effect up to date.
func recordFault(dir, target, kind, netName string, percent int, delay time.Duration) error {
	unlock, err := lockFaults(dir)
	if err != nil {
		return err
	}
	defer unlock()
	path := filepath.Join(dir, stateDir, faultsFile)
	rec := map[string]map[string]string{}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &rec)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	m := rec[target]
	if m == nil {
		m = map[string]string{}
		rec[target] = m
	}
	if netName == "" || netName == "all" {
		netName = "mgmt,cluster"
	}
	switch kind {
	case "hang":
		m["hang"] = ""
	case "resume":
		delete(m, "hang")
	case "link-down":
		for _, n := range strings.Split(netName, ",") {
			m["link-down "+n] = ""
		}
	case "link-up":
		for _, n := range strings.Split(netName, ",") {
			delete(m, "link-down "+n)
		}
	case "loss":
		if strings.Contains(target, "/") {
			for _, n := range strings.Split(netName, ",") {
				m["loss "+n] = fmt.Sprintf("%d%%", percent)
			}
		} else {
			m["loss"] = fmt.Sprintf("%d%%, delay %s", percent, delay)
		}
	case "partition":
		m["partition"] = ""
	case "clear":
		for k := range m {
			if k != "hang" && !strings.HasPrefix(k, "link-down") {
				delete(m, k)
			}
		}
	default:
		if rest, ok := strings.CutPrefix(kind, "loss to "); ok { // one way, from FaultOneWay
			for _, n := range strings.Split(netName, ",") {
				m["loss "+n+" to "+rest] = fmt.Sprintf("%d%%", percent)
			}
		}
	}
	if len(m) == 0 {
		delete(rec, target)
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	return atomicfile.Write(path, b, 0o600)
}

// Faults lists the faults in effect: what was injected and not undone,
// each host's power and BMC fault read from its chassis.
func Faults(ctx context.Context, dir string) ([]ActiveFault, error) {
	f, err := Load(dir)
	if err != nil {
		return nil, err
	}
	out := []ActiveFault{}
	unlock, err := lockFaults(f.Dir)
	if err != nil {
		return nil, err
	}
	rec := map[string]map[string]string{}
	if b, err := os.ReadFile(filepath.Join(f.Dir, stateDir, faultsFile)); err == nil {
		_ = json.Unmarshal(b, &rec)
	}
	unlock()
	for target, m := range rec {
		for kind, detail := range m {
			out = append(out, ActiveFault{Target: target, Kind: kind, Detail: detail})
		}
	}
	for _, s := range f.Sites {
		for _, h := range s.Hosts {
			chassis := vbmc.Dial(pathsOf(f.Dir, s.Name, h.Name).f("vbmc.sock"))
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if st, err := chassis.Status(cctx); err == nil && st.State == vbmc.Off {
				out = append(out, ActiveFault{Target: s.Name + "/" + h.Name, Kind: "power-off"})
			}
			if bf, err := chassis.BMCFault(cctx); err == nil && bf.Mode != "" {
				d := ""
				if bf.DelayMS > 0 {
					d = (time.Duration(bf.DelayMS) * time.Millisecond).String()
				}
				out = append(out, ActiveFault{Target: s.Name + "/" + h.Name, Kind: "bmc-" + bf.Mode, Detail: d})
			}
			cancel()
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].Kind < out[j].Kind
	})
	return out, nil
}
