package faultmgr_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/faultmgr"
)

func TestEmbeddedCatalog(t *testing.T) {
	c, err := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
	if err != nil {
		t.Fatal(err)
	}
	all := c.All()
	if len(all) < 40 {
		t.Errorf("catalogue has %d definitions; want at least 40", len(all))
	}
	areas := map[string]bool{}
	for _, d := range all {
		areas[d.ID[:3]] = true
	}
	for _, a := range []string{"100", "200", "270", "280", "300", "400", "500", "700", "900"} {
		if !areas[a] {
			t.Errorf("no alarm in area %s", a)
		}
	}
	for _, id := range []string{"200.001", "200.004", "200.005", "200.010", "280.001", "280.002", "400.001", "400.002", "900.001"} {
		if _, ok := c.Lookup(id); !ok {
			t.Errorf("brief §4's %s is missing", id)
		}
	}
	if _, ok := c.Lookup("999.999"); ok {
		t.Error("Lookup of an unknown ID succeeded")
	}
}

// TestAlarmsDocIsCurrent: docs/alarms.md is generated from the catalogue.
func TestAlarmsDocIsCurrent(t *testing.T) {
	c, _ := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
	got, err := os.ReadFile("../docs/alarms.md")
	if err != nil || !bytes.Equal(got, c.Markdown()) {
		t.Errorf("docs/alarms.md is not current (%v): run `go run ./cmd/petrel alarm catalogue --markdown > docs/alarms.md`", err)
	}
}

func TestBadCatalogues(t *testing.T) {
	ok := `{id: "200.001", severity: warning, entity: host, reason: r, alarm_type: equipment, probable_cause: p, repair: x, mgmt_affecting: none, degrade_affecting: none}`
	for name, y := range map[string]string{
		"duplicate":      "- " + ok + "\n- " + ok,
		"bad id":         "- " + strings.Replace(ok, "200.001", "2000.1", 1),
		"bad severity":   "- " + strings.Replace(ok, "warning", "loud", 1),
		"bad entity":     "- " + strings.Replace(ok, "entity: host", "entity: toaster", 1),
		"bad type":       "- " + strings.Replace(ok, "equipment", "gremlins", 1),
		"unknown field":  "- " + strings.Replace(ok, "repair: x", "repair: x, colour: red", 1),
		"no repair":      "- " + strings.Replace(ok, "repair: x", `repair: ""`, 1),
		"bad suppressor": "- " + strings.Replace(ok, "repair: x", `repair: x, suppressed_by: ["200.999"]`, 1),
	} {
		if _, err := faultmgr.LoadCatalog([]byte(y)); !errors.Is(err, faultmgr.ErrCatalog) {
			t.Errorf("%s: LoadCatalog = %v; want ErrCatalog", name, err)
		}
	}
}
