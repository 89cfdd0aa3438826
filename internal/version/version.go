// Package version tells which Petrel build is running. Release builds set
// Version and Commit with -ldflags "-X"; otherwise the Go build information
// supplies the commit when it has one. A binary installed in a software
// slot (DIR/sw/X/bin/petrel) by a patch runs as the version the patch
// stamped: the slot's record, DIR/sw/X/slot.json, names it (swpatch).
package version

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
)

// Set at link time by scripts/build.sh.
var (
	Version = "0.1.0-dev"
	Commit  = ""
)

// Info describes the running build.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
	// Built is the version built into the binary when a slot's record
	// stamps another.
	Built string `json:"built,omitempty"`
}

var slotVersion = sync.OnceValue(func() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return SlotVersion(exe)
})

// SlotVersion is the version the slot record beside binary (../slot.json
// from its bin directory) stamps, or "".
func SlotVersion(binary string) string {
	dir := filepath.Dir(binary)
	if filepath.Base(dir) != "bin" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "slot.json"))
	if err != nil {
		return ""
	}
	var rec struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &rec) != nil || len(rec.Version) > 128 {
		return ""
	}
	return rec.Version
}

// Get returns the running build's description.
func Get() Info {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	info := Info{Version: Version, Commit: commit, Go: runtime.Version()}
	if v := slotVersion(); v != "" && v != Version {
		info.Version, info.Built = v, Version
	}
	return info
}
