package subcloud

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServiceGroupsFileRefusesCycles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "groups.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`service_groups:
- {name: a, model: "1+0", hosts: [h], depends_on: [b], actions: {start: [x]}}
- {name: b, model: "1+0", hosts: [h], depends_on: [a], actions: {start: [x]}}
`)
	if _, err := readServiceGroups(path); err == nil || !strings.Contains(err.Error(), "cycle: a -> b -> a") {
		t.Errorf("a cycle = %v; want it named", err)
	}
	write(`service_groups:
- {name: a, model: "2+1", hosts: [h, i], actions: {start: [x]}}
`)
	if _, err := readServiceGroups(path); err == nil || !strings.Contains(err.Error(), "needs 3 hosts") {
		t.Errorf("2+1 over 2 hosts = %v; want it named", err)
	}
	write(`service_groups:
- {name: a, model: "1+1", hosts: [h, i], actions: {start: [x]}, colour: blue}
`)
	if _, err := readServiceGroups(path); err == nil {
		t.Error("an unknown field was accepted")
	}
	write(`service_groups:
- {name: a, model: "1+1", hosts: [h, i], actions: {start: [petrel, demo-service]}}
`)
	if g, err := readServiceGroups(path); err != nil || len(g) != 1 {
		t.Errorf("a good file = %v, %v", g, err)
	}
}
