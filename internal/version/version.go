// Package version tells which Petrel build is running. Release builds set
// Version and Commit with -ldflags "-X"; otherwise the Go build information
// supplies the commit when it has one.
package version

import (
	"runtime"
	"runtime/debug"
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
	return Info{Version: Version, Commit: commit, Go: runtime.Version()}
}
