package server

import (
	"net/http"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

func (s *Server) registerAlarms() {
	a := s.Auth
	s.REST.Handle("listAlarms", http.MethodGet, "/v1/alarms", a.Require(auth.Reader), s.listAlarms)
	s.REST.Handle("raiseAlarm", http.MethodPost, "/v1/alarms", a.Require(auth.Operator), s.raiseAlarm)
	s.REST.Handle("alarmSummary", http.MethodGet, "/v1/alarms/summary", a.Require(auth.Reader), s.alarmSummary)
	s.REST.Handle("getAlarm", http.MethodGet, "/v1/alarms/{uuid}", a.Require(auth.Reader), s.getAlarm)
	s.REST.Handle("deleteAlarm", http.MethodDelete, "/v1/alarms/{uuid}", a.Require(auth.Operator), s.deleteAlarm)
	s.REST.Handle("ackAlarm", http.MethodPost, "/v1/alarms/{uuid}/ack", a.Require(auth.Operator), s.ackAlarm)
	s.REST.Handle("logEvent", http.MethodPost, "/v1/events", a.Require(auth.Operator), s.logEvent)
	s.REST.Handle("listSuppressions", http.MethodGet, "/v1/alarm-suppressions", a.Require(auth.Reader), s.listSuppressions)
	s.REST.Handle("suppressAlarm", http.MethodPut, "/v1/alarm-suppressions/{alarm_id}", a.Require(auth.Operator), s.suppress(true))
	s.REST.Handle("unsuppressAlarm", http.MethodDelete, "/v1/alarm-suppressions/{alarm_id}", a.Require(auth.Operator), s.suppress(false))
}

func (s *Server) listAlarms(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, faultmgr.AlarmFilters...)
	if err != nil {
		return 0, nil, err
	}
	if v, ok := opts.Filters["severity"]; ok && !faultmgr.Severity(v).Valid() {
		return 0, nil, errs.Field("severity", "must be critical, major, minor or warning")
	}
	as, next, err := s.Alarms.Store().Alarms(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[faultmgr.Alarm]{Items: as, NextPageToken: rest.EncodePageToken(next)}, nil
}

// RaiseRequest is the body of POST /v1/alarms.
type RaiseRequest struct {
	AlarmID          string            `json:"alarm_id"`
	EntityInstanceID string            `json:"entity_instance_id"`
	Fields           map[string]string `json:"fields,omitempty"` // fill the reason's {placeholders}
}

func (s *Server) raiseAlarm(r *http.Request) (int, any, error) {
	var req RaiseRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	d, ok := s.Alarms.Catalog().Lookup(req.AlarmID)
	if !ok {
		return 0, nil, errs.Field("alarm_id", "%q is not in the alarm catalogue", req.AlarmID)
	}
	if d.Log {
		return 0, nil, errs.Field("alarm_id", "%s is a log entry, not an alarm: POST /v1/events", req.AlarmID)
	}
	a, changed, err := s.Alarms.Raise(r.Context(), req.AlarmID, req.EntityInstanceID, req.Fields)
	if err != nil {
		return 0, nil, err
	}
	if !changed {
		return http.StatusOK, a, nil
	}
	return http.StatusCreated, a, nil
}

func (s *Server) alarmSummary(r *http.Request) (int, any, error) {
	sum, err := s.Alarms.Store().Summary(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, sum, nil
}

func (s *Server) getAlarm(r *http.Request) (int, any, error) {
	a, err := s.Alarms.Store().Alarm(r.Context(), rest.Var(r, "uuid"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, a, nil
}

func (s *Server) deleteAlarm(r *http.Request) (int, any, error) {
	if _, err := s.Alarms.ClearUUID(r.Context(), rest.Var(r, "uuid")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) ackAlarm(r *http.Request) (int, any, error) {
	p, _ := auth.PrincipalFrom(r.Context())
	a, err := s.Alarms.Ack(r.Context(), rest.Var(r, "uuid"), p.User)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, a, nil
}

func (s *Server) listSuppressions(r *http.Request) (int, any, error) {
	ids, err := s.Alarms.Store().Suppressions(r.Context())
	if err != nil {
		return 0, nil, err
	}
	if ids == nil {
		ids = []string{}
	}
	return http.StatusOK, rest.List[string]{Items: ids}, nil
}

func (s *Server) suppress(on bool) rest.Handler {
	return func(r *http.Request) (int, any, error) {
		p, _ := auth.PrincipalFrom(r.Context())
		if err := s.Alarms.Suppress(r.Context(), rest.Var(r, "alarm_id"), on, p.User); err != nil {
			return 0, nil, err
		}
		return http.StatusNoContent, nil, nil
	}
}

// LogRequest is the body of POST /v1/events: a log entry from the catalogue.
type LogRequest struct {
	AlarmID          string            `json:"alarm_id"`
	EntityInstanceID string            `json:"entity_instance_id"`
	Fields           map[string]string `json:"fields,omitempty"`
}

func (s *Server) logEvent(r *http.Request) (int, any, error) {
	var req LogRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	d, ok := s.Alarms.Catalog().Lookup(req.AlarmID)
	if !ok {
		return 0, nil, errs.Field("alarm_id", "%q is not in the alarm catalogue", req.AlarmID)
	}
	if !d.Log {
		return 0, nil, errs.Field("alarm_id", "%s is an alarm, not a log entry: POST /v1/alarms", req.AlarmID)
	}
	ev, err := s.Alarms.Log(r.Context(), req.AlarmID, req.EntityInstanceID, req.Fields)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, ev, nil
}
