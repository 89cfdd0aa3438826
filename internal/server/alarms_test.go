package server_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

func TestAlarmAPI(t *testing.T) {
	d, _ := start(t)
	ctx := context.Background()
	c := servertest.Client(t, d, servertest.AdminToken(t, d))
	var a faultmgr.Alarm
	if err := c.Do(ctx, http.MethodPost, "/v1/alarms", nil, server.RaiseRequest{AlarmID: "200.010", EntityInstanceID: "host=worker-3"}, &a); err != nil {
		t.Fatal(err)
	}
	if a.UUID == "" || a.Severity != faultmgr.Major || a.ProposedRepairAction == "" {
		t.Errorf("raised = %+v", a)
	}
	// Bad input: 400 naming the field, nothing stored.
	for name, req := range map[string]server.RaiseRequest{
		"unknown id":  {AlarmID: "123.456", EntityInstanceID: "host=x"},
		"bad entity":  {AlarmID: "200.010", EntityInstanceID: "worker 3"},
		"missing all": {},
	} {
		if err := c.Do(ctx, http.MethodPost, "/v1/alarms", nil, req, nil); !errors.Is(err, errs.Invalid) {
			t.Errorf("%s: %v; want 400", name, err)
		}
	}
	var list rest.List[faultmgr.Alarm]
	if err := c.Do(ctx, http.MethodGet, "/v1/alarms", map[string][]string{"severity": {"major"}}, nil, &list); err != nil || len(list.Items) != 1 {
		t.Errorf("list major = %d, %v", len(list.Items), err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/alarms", map[string][]string{"severity": {"loud"}}, nil, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("severity=loud: %v", err)
	}
	var sum faultmgr.Summary
	if err := c.Do(ctx, http.MethodGet, "/v1/alarms/summary", nil, nil, &sum); err != nil || sum.Major != 1 {
		t.Errorf("summary = %+v, %v", sum, err)
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/alarms/"+a.UUID+"/ack", nil, nil, &a); err != nil || a.AckedBy != "admin" {
		t.Errorf("ack = %+v, %v", a, err)
	}
	if err := c.Do(ctx, http.MethodPut, "/v1/alarm-suppressions/200.004", nil, nil, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("suppress a non-suppressible ID: %v; want 409", err)
	}
	if err := c.Do(ctx, http.MethodPut, "/v1/alarm-suppressions/200.010", nil, nil, nil); err != nil {
		t.Errorf("suppress 200.010: %v", err)
	}
	c.Do(ctx, http.MethodGet, "/v1/alarms/summary", nil, nil, &sum)
	if sum.Major != 0 {
		t.Errorf("summary after suppressing = %+v", sum)
	}
	var sup rest.List[string]
	if err := c.Do(ctx, http.MethodGet, "/v1/alarm-suppressions", nil, nil, &sup); err != nil || len(sup.Items) != 1 {
		t.Errorf("suppressions = %+v, %v", sup, err)
	}
	if err := c.Do(ctx, http.MethodDelete, "/v1/alarm-suppressions/200.010", nil, nil, nil); err != nil {
		t.Error(err)
	}
	if err := c.Do(ctx, http.MethodDelete, "/v1/alarms/"+a.UUID, nil, nil, nil); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/alarms/"+a.UUID, nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("get after delete: %v; want 404", err)
	}
	var evs rest.List[faultmgr.Event]
	c.Do(ctx, http.MethodGet, "/v1/events", map[string][]string{"alarm_id": {"200.010"}}, nil, &evs)
	if len(evs.Items) != 2 || evs.Items[0].Type != faultmgr.EventClear || evs.Items[1].Type != faultmgr.EventSet {
		t.Errorf("events of 200.010 = %+v; want clear, set", evs.Items)
	}
}
