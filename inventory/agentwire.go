package inventory

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/swpatch"
)

// The agent<->site protocol: an agent joins with POST /v1/join, then
// reports with PUT /v1/agents/{uuid}/report over mutual TLS.

// JoinRequest is the body of POST /v1/join: an agent asks to join with a
// join token, its machine identity and a certificate request for a key it
// keeps.
type JoinRequest struct {
	JoinToken string `json:"join_token"`
	MachineID string `json:"machine_id"`
	CSR       string `json:"csr"` // PEM
}

// JoinResponse is the agent's identity at this site.
type JoinResponse struct {
	Host          Host     `json:"host"`
	Certificate   string   `json:"certificate"`    // PEM, CN = machine id, OU = site
	ServerCA      string   `json:"server_ca"`      // PEM: verifies the site's API
	ClientCA      string   `json:"client_ca"`      // PEM: the site's agent CA
	ReportPath    string   `json:"report_path"`    // where to send reports
	SiteName      string   `json:"site"`           // the site joined
	SoftwareSlots []string `json:"software_slots"` // reserved
}

// Report is what an agent sends: all of it at start (Full), then only what
// changed. Generation increases with every report of one boot.
type Report struct {
	Full            bool      `json:"full"`
	BootID          string    `json:"boot_id"`
	Generation      uint64    `json:"generation"`
	BootedAt        time.Time `json:"booted_at"`
	SoftwareVersion string    `json:"software_version,omitempty"`
	Hardware        *Hardware `json:"hardware,omitempty"` // nil in a delta: unchanged
	// Alarms is every resource alarm the agent asserts about its host, in
	// every report, full or delta: the site raises these and clears the
	// host's other resource alarms. Absent means none (and keeps a report
	// without alarms readable by a site that predates them).
	Alarms []ResourceAlarm `json:"alarms,omitempty"`
	// Software is the host's software slots: what runs, what is staged
	// for the next boot, the last rollback and failed install. Absent: the
	// agent does not manage software (the site keeps what it knew).
	Software *swpatch.Status `json:"software,omitempty"`
}

// The resource alarms an agent may assert about its own host (its
// monitors); the site accepts no other alarm from an agent.
const (
	AlarmCPU        = "100.101" // CPU usage of the host's cgroup above threshold
	AlarmMemory     = "100.103" // memory usage above threshold
	AlarmFilesystem = "100.104" // a file system of the host above threshold
)

// MaxResourceAlarms bounds the alarms one report may carry.
const MaxResourceAlarms = 16

// ResourceAlarm is a resource alarm an agent asserts about its own host.
// It never names a host: the site builds the entity from the identity in
// the agent's certificate, host=NAME for CPU and memory and
// host=NAME.filesystem=FS for a file system, so an agent cannot raise an
// alarm for another host and a renamed host keeps its alarms.
type ResourceAlarm struct {
	AlarmID  string `json:"alarm_id"`
	Resource string `json:"resource,omitempty"` // "" (the host) or, for 100.104 only, filesystem=NAME
	// Fields fill the alarm's reason: threshold (percent, required) and,
	// for 100.104, filesystem (the path).
	Fields map[string]string `json:"fields,omitempty"`
}

// Entity is the alarm's entity instance ID on host name.
func (a ResourceAlarm) Entity(host string) string {
	if a.Resource == "" {
		return "host=" + host
	}
	return "host=" + host + "." + a.Resource
}

// IsResourceAlarm reports whether id is one of the alarms agents assert.
func IsResourceAlarm(id string) bool {
	return id == AlarmCPU || id == AlarmMemory || id == AlarmFilesystem
}

var filesystemName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidateResourceAlarms checks the alarms of a report: at most
// MaxResourceAlarms, no two with the same alarm ID and resource, only the
// resource alarm IDs, resources and fields. A resource naming a host is
// Forbidden (an agent speaks only for its own host); anything else wrong
// is Invalid.
func ValidateResourceAlarms(field string, as []ResourceAlarm) error {
	if len(as) > MaxResourceAlarms {
		return errs.Field(field, "at most %d alarms", MaxResourceAlarms)
	}
	seen := make(map[string]bool, len(as))
	for i, a := range as {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !IsResourceAlarm(a.AlarmID) {
			return errs.Field(f+".alarm_id", "an agent may assert only %s, %s and %s", AlarmCPU, AlarmMemory, AlarmFilesystem)
		}
		for kv := range strings.SplitSeq(a.Resource, ".") {
			if k, _, _ := strings.Cut(kv, "="); k == "host" {
				return errs.Wrapf(errs.Forbidden, "%s.resource: an agent asserts alarms of its own host only; it names no host", f)
			}
		}
		switch a.AlarmID {
		case AlarmFilesystem:
			name, ok := strings.CutPrefix(a.Resource, "filesystem=")
			if !ok || !filesystemName.MatchString(name) {
				return errs.Field(f+".resource", "must be filesystem=NAME (lower-case letters, digits, '-', '_')")
			}
		default:
			if a.Resource != "" {
				return errs.Field(f+".resource", "must be empty for %s (the host itself)", a.AlarmID)
			}
		}
		key := a.AlarmID + " " + a.Resource
		if seen[key] {
			return errs.Field(f, "%s on %q is listed twice", a.AlarmID, a.Resource)
		}
		seen[key] = true
		if err := validateAlarmFields(f+".fields", a); err != nil {
			return err
		}
	}
	return nil
}

// maxFilesystemField bounds the filesystem field of 100.104 (a path).
const maxFilesystemField = 200

// ValidFilesystemField reports whether v may be the filesystem field of
// 100.104: 1-200 printable characters.
func ValidFilesystemField(v string) bool {
	return v != "" && len(v) <= maxFilesystemField &&
		strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

func validateAlarmFields(field string, a ResourceAlarm) error {
	th, ok := a.Fields["threshold"]
	if !ok {
		return errs.Field(field+".threshold", "is required")
	}
	if v, err := strconv.ParseFloat(th, 64); err != nil || len(th) > 8 || !(v > 0 && v <= 100) {
		return errs.Field(field+".threshold", "must be a percentage above 0 and at most 100")
	}
	for k, v := range a.Fields {
		switch {
		case k == "threshold":
		case k == "filesystem" && a.AlarmID == AlarmFilesystem:
			if !ValidFilesystemField(v) {
				return errs.Field(field+".filesystem", "must be 1-%d printable characters", maxFilesystemField)
			}
		default:
			return errs.Field(field, "unknown field %q for %s", k, a.AlarmID)
		}
	}
	return nil
}

// SortResourceAlarms returns a sorted copy of as (by alarm ID, then
// resource), sharing no maps with it; never nil.
func SortResourceAlarms(as []ResourceAlarm) []ResourceAlarm {
	out := cloneResourceAlarms(as)
	if out == nil {
		out = []ResourceAlarm{}
	}
	slices.SortFunc(out, func(a, b ResourceAlarm) int {
		return cmp.Or(cmp.Compare(a.AlarmID, b.AlarmID), cmp.Compare(a.Resource, b.Resource))
	})
	return out
}

// ReportAck tells the agent what the site holds; NeedFull asks for a full
// report (the site lost track of this boot).
type ReportAck struct {
	Generation uint64 `json:"generation"`
	NeedFull   bool   `json:"need_full"`
	// Heartbeat tells the agent how to answer the site's heartbeat pulses:
	// its key (base64, over this mutually authenticated channel only) and
	// the UDP port to answer on.
	Heartbeat *HeartbeatConfig `json:"heartbeat,omitempty"`
}

// HeartbeatConfig is an agent's part of the heartbeat.
type HeartbeatConfig struct {
	Key  string `json:"key"`
	Port int    `json:"port"`
}

// cloneResourceAlarms deep-copies as (nil stays nil).
func cloneResourceAlarms(as []ResourceAlarm) []ResourceAlarm {
	if as == nil {
		return nil
	}
	out := make([]ResourceAlarm, len(as))
	for i, a := range as {
		a.Fields = maps.Clone(a.Fields)
		out[i] = a
	}
	return out
}

// AgentCommand is an order from the site to a host's agent (GET
// /v1/agents/{uuid}/commands). Epoch is the issuing controller's epoch:
// an agent refuses a command older than the newest epoch it has seen, so a
// controller that lost its role cannot act through agents.
type AgentCommand struct {
	ID       string    `json:"id"`
	Action   string    `json:"action"` // reboot | install
	Epoch    uint64    `json:"epoch"`
	IssuedAt time.Time `json:"issued_at"`
	// Install, for action install: the patches to install, requirements
	// first (each fetched from GET /v1/agents/{uuid}/patches/{id}), and the
	// patches to remove.
	Install *InstallOrder `json:"install,omitempty"`
}

// InstallOrder is what a host's install does.
type InstallOrder struct {
	Patches   []string `json:"patches"`              // to install, in order
	Remove    []string `json:"remove,omitempty"`     // to take off (boot the slot without them)
	InService bool     `json:"in_service,omitempty"` // install into the running slot, no reboot
}

// AgentCommands is the answer to an agent's poll.
type AgentCommands struct {
	Epoch    uint64         `json:"epoch"`
	Commands []AgentCommand `json:"commands"`
}
