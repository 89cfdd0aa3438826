package inventory_test

import (
	"errors"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
)

func TestResourceAlarmEntity(t *testing.T) {
	cpu := inventory.ResourceAlarm{AlarmID: inventory.AlarmCPU}
	fs := inventory.ResourceAlarm{AlarmID: inventory.AlarmFilesystem, Resource: "filesystem=software-root"}
	if got := cpu.Entity("worker-1"); got != "host=worker-1" {
		t.Errorf("Entity() = %q; want host=worker-1", got)
	}
	if got := fs.Entity("worker-1"); got != "host=worker-1.filesystem=software-root" {
		t.Errorf("Entity() = %q; want host=worker-1.filesystem=software-root", got)
	}
}

func TestValidateResourceAlarms(t *testing.T) {
	th := map[string]string{"threshold": "90"}
	ok := []inventory.ResourceAlarm{
		{AlarmID: "100.101", Fields: th},
		{AlarmID: "100.103", Fields: map[string]string{"threshold": "87.5"}},
		{AlarmID: "100.104", Resource: "filesystem=software-root", Fields: map[string]string{"threshold": "90", "filesystem": "/srv/petrel"}},
		{AlarmID: "100.104", Resource: "filesystem=var_log-2", Fields: th},
	}
	if err := inventory.ValidateResourceAlarms("alarms", ok); err != nil {
		t.Errorf("valid alarms: %v", err)
	}
	if err := inventory.ValidateResourceAlarms("alarms", nil); err != nil {
		t.Errorf("no alarms: %v", err)
	}
	for name, tc := range map[string]struct {
		a    inventory.ResourceAlarm
		kind error
	}{
		"host in the resource":      {inventory.ResourceAlarm{AlarmID: "100.101", Resource: "host=other", Fields: th}, errs.Forbidden},
		"host further down":         {inventory.ResourceAlarm{AlarmID: "100.104", Resource: "filesystem=a.host=b", Fields: th}, errs.Forbidden},
		"other alarm":               {inventory.ResourceAlarm{AlarmID: "200.001", Fields: th}, errs.Invalid},
		"resource on memory":        {inventory.ResourceAlarm{AlarmID: "100.103", Resource: "filesystem=x", Fields: th}, errs.Invalid},
		"file system with spaces":   {inventory.ResourceAlarm{AlarmID: "100.104", Resource: "filesystem=a b", Fields: th}, errs.Invalid},
		"file system with a dot":    {inventory.ResourceAlarm{AlarmID: "100.104", Resource: "filesystem=a.b", Fields: th}, errs.Invalid},
		"another resource key":      {inventory.ResourceAlarm{AlarmID: "100.104", Resource: "disk=sda", Fields: th}, errs.Invalid},
		"threshold zero":            {inventory.ResourceAlarm{AlarmID: "100.101", Fields: map[string]string{"threshold": "0"}}, errs.Invalid},
		"threshold NaN":             {inventory.ResourceAlarm{AlarmID: "100.101", Fields: map[string]string{"threshold": "NaN"}}, errs.Invalid},
		"filesystem on CPU":         {inventory.ResourceAlarm{AlarmID: "100.101", Fields: map[string]string{"threshold": "90", "filesystem": "/"}}, errs.Invalid},
		"control characters":        {inventory.ResourceAlarm{AlarmID: "100.104", Resource: "filesystem=r", Fields: map[string]string{"threshold": "90", "filesystem": "/a\nb"}}, errs.Invalid},
		"an empty filesystem field": {inventory.ResourceAlarm{AlarmID: "100.104", Resource: "filesystem=r", Fields: map[string]string{"threshold": "90", "filesystem": ""}}, errs.Invalid},
	} {
		if err := inventory.ValidateResourceAlarms("alarms", []inventory.ResourceAlarm{tc.a}); !errors.Is(err, tc.kind) {
			t.Errorf("%s: %v; want %v", name, err, tc.kind)
		}
	}
}

func TestSortResourceAlarms(t *testing.T) {
	in := []inventory.ResourceAlarm{
		{AlarmID: "100.104", Resource: "filesystem=b"},
		{AlarmID: "100.101", Fields: map[string]string{"threshold": "90"}},
		{AlarmID: "100.104", Resource: "filesystem=a"},
	}
	out := inventory.SortResourceAlarms(in)
	if out[0].AlarmID != "100.101" || out[1].Resource != "filesystem=a" || out[2].Resource != "filesystem=b" {
		t.Errorf("SortResourceAlarms() = %+v", out)
	}
	out[0].Fields["threshold"] = "1"
	if in[1].Fields["threshold"] != "90" {
		t.Error("SortResourceAlarms() shares its fields with its input")
	}
	if got := inventory.SortResourceAlarms(nil); got == nil || len(got) != 0 {
		t.Errorf("SortResourceAlarms(nil) = %#v; want empty, not nil", got)
	}
}
