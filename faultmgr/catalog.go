package faultmgr

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"

	"sigs.k8s.io/yaml"
)

//go:embed alarms.yaml
var embeddedCatalog []byte

// EmbeddedCatalog is the catalogue built into this binary.
func EmbeddedCatalog() []byte { return embeddedCatalog }

// Embedded is the embedded catalog, parsed once per process: it never
// changes, and a controller pair builds a site controller at every
// takeover. The Catalog is read-only.
var Embedded = sync.OnceValues(func() (*Catalog, error) { return LoadCatalog(embeddedCatalog) })

// Severity is an alarm's severity.
type Severity string

const (
	Critical Severity = "critical"
	Major    Severity = "major"
	Minor    Severity = "minor"
	Warning  Severity = "warning"
)

var severityRank = map[Severity]int{Critical: 4, Major: 3, Minor: 2, Warning: 1}

// Valid reports whether s is a known severity.
func (s Severity) Valid() bool { _, ok := severityRank[s]; return ok }

// Definition is one catalogue entry (brief §4's fields).
type Definition struct {
	ID               string   `json:"id"`
	Severity         Severity `json:"severity"`
	Entity           string   `json:"entity"`
	Reason           string   `json:"reason"`
	AlarmType        string   `json:"alarm_type"`
	ProbableCause    string   `json:"probable_cause"`
	Repair           string   `json:"repair"`
	ServiceAffecting bool     `json:"service_affecting"`
	MgmtAffecting    string   `json:"mgmt_affecting"`    // blocks orchestration at this severity, or "none"
	DegradeAffecting string   `json:"degrade_affecting"` // degrades its host at this severity, or "none"
	Suppressible     bool     `json:"suppressible"`
	SuppressedBy     []string `json:"suppressed_by,omitempty"`
	Log              bool     `json:"log,omitempty"` // a log entry: an event without an alarm, never active
}

// Catalog is a validated set of alarm definitions.
type Catalog struct {
	defs map[string]Definition
}

var (
	idPattern   = regexp.MustCompile(`^[0-9]{3}\.[0-9]{3}$`)
	entityTypes = map[string]bool{"host": true, "site": true, "subcloud": true, "service-group": true, "instance": true,
		"alarm-id": true}
	// X.733 event types, with the X.736 security ones.
	alarmTypes = map[string]bool{"communications": true, "quality-of-service": true, "processing-error": true,
		"equipment": true, "environmental": true, "integrity-violation": true, "operational-violation": true,
		"physical-violation": true, "security-service-or-mechanism-violation": true, "time-domain-violation": true}
	affecting = map[string]bool{"none": true, "critical": true, "major": true, "minor": true, "warning": true}
)

// ErrCatalog reports an invalid catalogue.
var ErrCatalog = errors.New("faultmgr: invalid alarm catalogue")

// LoadCatalog parses and validates a catalogue: unknown fields, duplicate
// or malformed IDs, unknown severities, entity or alarm types, and
// suppressions by unknown IDs are errors.
func LoadCatalog(b []byte) (*Catalog, error) {
	var defs []Definition
	if err := yaml.UnmarshalStrict(b, &defs); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	c := &Catalog{defs: map[string]Definition{}}
	for _, d := range defs {
		switch {
		case !idPattern.MatchString(d.ID):
			return nil, fmt.Errorf("%w: id %q is not GGG.NNN", ErrCatalog, d.ID)
		case c.defs[d.ID].ID != "":
			return nil, fmt.Errorf("%w: %s is defined twice", ErrCatalog, d.ID)
		case !d.Severity.Valid():
			return nil, fmt.Errorf("%w: %s: severity %q", ErrCatalog, d.ID, d.Severity)
		case !entityTypes[d.Entity]:
			return nil, fmt.Errorf("%w: %s: entity %q", ErrCatalog, d.ID, d.Entity)
		case !alarmTypes[d.AlarmType]:
			return nil, fmt.Errorf("%w: %s: alarm_type %q is not an X.733 type", ErrCatalog, d.ID, d.AlarmType)
		case !affecting[d.MgmtAffecting] || !affecting[d.DegradeAffecting]:
			return nil, fmt.Errorf("%w: %s: mgmt_affecting and degrade_affecting are a severity or none", ErrCatalog, d.ID)
		case strings.TrimSpace(d.Reason) == "" || strings.TrimSpace(d.Repair) == "" || d.ProbableCause == "":
			return nil, fmt.Errorf("%w: %s: reason, repair and probable_cause are required", ErrCatalog, d.ID)
		}
		c.defs[d.ID] = d
	}
	for _, d := range c.defs {
		for _, by := range d.SuppressedBy {
			if c.defs[by].ID == "" || by == d.ID {
				return nil, fmt.Errorf("%w: %s: suppressed_by %q is not another catalogue ID", ErrCatalog, d.ID, by)
			}
		}
	}
	return c, nil
}

// Lookup returns the definition of id.
func (c *Catalog) Lookup(id string) (Definition, bool) {
	d, ok := c.defs[id]
	return d, ok
}

// All returns every definition, by ID.
func (c *Catalog) All() []Definition {
	out := make([]Definition, 0, len(c.defs))
	for _, d := range c.defs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

var areas = map[string]string{"100": "Resources", "200": "Hosts (maintenance)", "250": "Configuration",
	"270": "Host services", "280": "Distributed cloud", "300": "Network", "400": "High availability",
	"500": "Security", "700": "Instances", "900": "Software"}

// Markdown renders the catalogue as docs/alarms.md.
func (c *Catalog) Markdown() []byte {
	var b bytes.Buffer
	b.WriteString("# Alarms\n\nGenerated from `faultmgr/alarms.yaml` by `petrel alarm catalogue --markdown`; do not edit.\n")
	b.WriteString("An alarm is unique by (alarm ID, entity instance ID). *Mgmt* is the severity at which it blocks\n")
	b.WriteString("orchestration, *degrade* the severity at which it degrades its host; *SA* = service-affecting.\n")
	b.WriteString("Entries marked *(log)* are log entries: events without an alarm, never active.\n")
	area := ""
	for _, d := range c.All() {
		if g := d.ID[:3]; g != area {
			area = g
			fmt.Fprintf(&b, "\n## %s.xxx — %s\n\n", g, areas[g])
			b.WriteString("| ID | severity | entity | reason | type / probable cause | repair | SA | mgmt | degrade | suppressible |\n")
			b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
		}
		sev := string(d.Severity)
		if d.Log {
			sev += " (log)"
		}
		supp := "no"
		if d.Suppressible {
			supp = "yes"
		}
		if len(d.SuppressedBy) > 0 {
			supp += " (by " + strings.Join(d.SuppressedBy, ", ") + ")"
		}
		sa := "no"
		if d.ServiceAffecting {
			sa = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s |\n", d.ID, sev, d.Entity,
			mdEscape(d.Reason), d.AlarmType, d.ProbableCause, mdEscape(d.Repair), sa, d.MgmtAffecting, d.DegradeAffecting, supp)
	}
	return b.Bytes()
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
