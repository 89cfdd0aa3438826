package vbmc

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Redfish paths of the chassis' one system, chassis and manager.
const (
	rfRoot     = "/redfish/v1"
	rfSessions = rfRoot + "/SessionService/Sessions"
	rfSystem   = rfRoot + "/Systems/1"
	rfChassis  = rfRoot + "/Chassis/1"
	rfManager  = rfRoot + "/Managers/1"
	rfReset    = rfSystem + "/Actions/ComputerSystem.Reset"

	sessionTTL  = 30 * time.Minute // idle timeout, as SessionService reports
	maxSessions = 32
)

// resetTypes are the ResetType values ComputerSystem.Reset accepts and the
// power action each one means.
var resetTypes = map[string]Action{
	"On":               ActionOn,
	"ForceOff":         ActionOff,
	"GracefulShutdown": ActionSoftOff,
	"ForceRestart":     ActionReset,
	"GracefulRestart":  ActionSoftRestart,
	"PowerCycle":       ActionCycle,
}

// redfish serves the chassis' Redfish service: the service root,
// SessionService (X-Auth-Token sessions) next to HTTP basic auth, one
// ComputerSystem with ComputerSystem.Reset, one Chassis with Thermal and
// Power, and one Manager. Enough for bmclib's gofish provider, gofish and
// DMTF's redfishtool.
type redfish struct {
	power      Power
	user, pass string
	uuid       string
	log        *slog.Logger

	mu       sync.Mutex
	sessions map[string]*rfSession // by SHA-256 of the token
	nextID   int
}

type rfSession struct {
	id   string
	used time.Time
}

func newRedfish(p Power, user, pass, uuid string, log *slog.Logger) *redfish {
	return &redfish{power: p, user: user, pass: pass, uuid: uuid, log: log, sessions: map[string]*rfSession{}}
}

func tokenKey(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

// handler routes Redfish requests; a trailing slash is ignored.
func (rf *redfish) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /redfish", func(w http.ResponseWriter, r *http.Request) {
		rfJSON(w, http.StatusOK, map[string]string{"v1": rfRoot + "/"})
	})
	mux.HandleFunc("GET "+rfRoot, rf.serviceRoot)
	mux.HandleFunc("GET "+rfRoot+"/odata", rf.odata)
	mux.HandleFunc("POST "+rfSessions, rf.login)
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !rf.authorised(r) {
				w.Header().Set("WWW-Authenticate", `Basic realm="petrel-vbmc"`)
				rfError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET "+rfRoot+"/SessionService", auth(rf.sessionService))
	mux.HandleFunc("GET "+rfSessions, auth(rf.listSessions))
	mux.HandleFunc("GET "+rfSessions+"/{id}", auth(rf.getSession))
	mux.HandleFunc("DELETE "+rfSessions+"/{id}", auth(rf.logout))
	mux.HandleFunc("GET "+rfRoot+"/Systems", auth(collection("ComputerSystemCollection", "Computer System Collection", rfSystem)))
	mux.HandleFunc("GET "+rfSystem, auth(rf.system))
	mux.HandleFunc("POST "+rfReset, auth(rf.reset))
	mux.HandleFunc("GET "+rfSystem+"/ResetActionInfo", auth(rf.resetInfo))
	mux.HandleFunc("GET "+rfRoot+"/Chassis", auth(collection("ChassisCollection", "Chassis Collection", rfChassis)))
	mux.HandleFunc("GET "+rfChassis, auth(rf.chassis))
	mux.HandleFunc("GET "+rfChassis+"/Thermal", auth(rf.thermal))
	mux.HandleFunc("GET "+rfChassis+"/Power", auth(rf.powerResource))
	mux.HandleFunc("GET "+rfRoot+"/Managers", auth(collection("ManagerCollection", "Manager Collection", rfManager)))
	mux.HandleFunc("GET "+rfManager, auth(rf.manager))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") {
			r.URL.Path = strings.TrimRight(p, "/")
		}
		w.Header().Set("OData-Version", "4.0")
		mux.ServeHTTP(w, r)
	})
}

func (rf *redfish) authorised(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		rf.mu.Lock()
		defer rf.mu.Unlock()
		s, ok := rf.sessions[tokenKey(tok)]
		if !ok || time.Since(s.used) > sessionTTL {
			return false
		}
		s.used = time.Now()
		return true
	}
	if u, p, ok := r.BasicAuth(); ok {
		return rf.credentialsMatch(u, p)
	}
	return false
}

func (rf *redfish) credentialsMatch(u, p string) bool {
	uok := subtle.ConstantTimeCompare([]byte(u), []byte(rf.user)) == 1
	pok := subtle.ConstantTimeCompare([]byte(p), []byte(rf.pass)) == 1
	return uok && pok
}

func (rf *redfish) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		UserName string
		Password string
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		rfError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body was malformed JSON.")
		return
	}
	if !rf.credentialsMatch(req.UserName, req.Password) {
		rf.log.Warn("redfish login refused", "remote", r.RemoteAddr)
		rfError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "Invalid user name or password.")
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	rf.mu.Lock()
	rf.expireLocked()
	if len(rf.sessions) >= maxSessions {
		rf.mu.Unlock()
		rfError(w, http.StatusServiceUnavailable, "Base.1.8.SessionLimitExceeded", "The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation.")
		return
	}
	rf.nextID++
	id := itoa(rf.nextID)
	rf.sessions[tokenKey(tok)] = &rfSession{id: id, used: time.Now()}
	rf.mu.Unlock()
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", rfSessions+"/"+id)
	rfJSON(w, http.StatusCreated, rf.sessionBody(id))
}

func (rf *redfish) expireLocked() {
	for k, s := range rf.sessions {
		if time.Since(s.used) > sessionTTL {
			delete(rf.sessions, k)
		}
	}
}

func (rf *redfish) sessionBody(id string) map[string]any {
	return map[string]any{
		"@odata.id": rfSessions + "/" + id, "@odata.type": "#Session.v1_3_0.Session",
		"Id": id, "Name": "User Session", "UserName": rf.user,
	}
}

func (rf *redfish) findSession(id string) (string, bool) {
	for k, s := range rf.sessions {
		if s.id == id {
			return k, true
		}
	}
	return "", false
}

func (rf *redfish) getSession(w http.ResponseWriter, r *http.Request) {
	rf.mu.Lock()
	_, ok := rf.findSession(r.PathValue("id"))
	rf.mu.Unlock()
	if !ok {
		rfError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI was not found.")
		return
	}
	rfJSON(w, http.StatusOK, rf.sessionBody(r.PathValue("id")))
}

func (rf *redfish) logout(w http.ResponseWriter, r *http.Request) {
	rf.mu.Lock()
	k, ok := rf.findSession(r.PathValue("id"))
	delete(rf.sessions, k)
	rf.mu.Unlock()
	if !ok {
		rfError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI was not found.")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rf *redfish) listSessions(w http.ResponseWriter, r *http.Request) {
	rf.mu.Lock()
	var members []string
	for _, s := range rf.sessions {
		members = append(members, rfSessions+"/"+s.id)
	}
	rf.mu.Unlock()
	collection("SessionCollection", "Session Collection", members...)(w, r)
}

func (rf *redfish) serviceRoot(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfRoot + "/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
		"Id": "RootService", "Name": "Petrel lab chassis", "RedfishVersion": "1.6.0", "UUID": rf.uuid,
		"Systems":        odataID(rfRoot + "/Systems"),
		"Chassis":        odataID(rfRoot + "/Chassis"),
		"Managers":       odataID(rfRoot + "/Managers"),
		"SessionService": odataID(rfRoot + "/SessionService"),
		"Links":          map[string]any{"Sessions": odataID(rfSessions)},
	})
}

func (rf *redfish) odata(w http.ResponseWriter, r *http.Request) {
	var vals []map[string]string
	for _, n := range []string{"Systems", "Chassis", "Managers", "SessionService"} {
		vals = append(vals, map[string]string{"name": n, "kind": "Singleton", "url": rfRoot + "/" + n})
	}
	rfJSON(w, http.StatusOK, map[string]any{"@odata.context": rfRoot + "/$metadata", "value": vals})
}

func (rf *redfish) sessionService(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfRoot + "/SessionService", "@odata.type": "#SessionService.v1_1_8.SessionService",
		"Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true,
		"SessionTimeout": int(sessionTTL / time.Second), "Sessions": odataID(rfSessions),
		"Status": map[string]string{"State": "Enabled", "Health": "OK"},
	})
}

func (rf *redfish) powerState() string {
	if rf.power.PowerState() == On {
		return "On"
	}
	return "Off"
}

func (rf *redfish) system(w http.ResponseWriter, r *http.Request) {
	allowed := []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"}
	state := "Enabled"
	if rf.powerState() == "Off" {
		state = "StandbyOffline"
	}
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfSystem, "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
		"Id": "1", "Name": "System", "SystemType": "Physical", "UUID": rf.uuid,
		"Manufacturer": "Petrel", "Model": "Lab chassis", "PowerState": rf.powerState(),
		"Status": map[string]string{"State": state, "Health": "OK"},
		"Boot":   map[string]any{"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None"},
		"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
			"target": rfReset, "ResetType@Redfish.AllowableValues": allowed,
			"@Redfish.ActionInfo": rfSystem + "/ResetActionInfo",
		}},
		"Links": map[string]any{"Chassis": []any{odataID(rfChassis)}, "ManagedBy": []any{odataID(rfManager)}},
	})
}

func (rf *redfish) resetInfo(w http.ResponseWriter, r *http.Request) {
	allowed := []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"}
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfSystem + "/ResetActionInfo", "@odata.type": "#ActionInfo.v1_1_2.ActionInfo",
		"Id": "ResetActionInfo", "Name": "Reset Action Info",
		"Parameters": []any{map[string]any{"Name": "ResetType", "Required": true, "DataType": "String", "AllowableValues": allowed}},
	})
}

func (rf *redfish) reset(w http.ResponseWriter, r *http.Request) {
	var req struct{ ResetType string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		rfError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body was malformed JSON.")
		return
	}
	a, ok := resetTypes[req.ResetType]
	if !ok {
		rfError(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueNotInList",
			"The value '"+req.ResetType+"' for the parameter ResetType is not in the list of acceptable values.")
		return
	}
	if err := rf.power.PowerAction(r.Context(), a); err != nil {
		rf.log.Error("redfish reset failed", "reset_type", req.ResetType, "err", err)
		rfError(w, http.StatusInternalServerError, "Base.1.8.InternalError", "The request failed due to an internal service error.")
		return
	}
	rf.log.Info("redfish reset", "reset_type", req.ResetType)
	w.WriteHeader(http.StatusNoContent)
}

func (rf *redfish) chassis(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfChassis, "@odata.type": "#Chassis.v1_10_0.Chassis",
		"Id": "1", "Name": "Chassis", "ChassisType": "RackMount", "Manufacturer": "Petrel", "Model": "Lab chassis",
		"PowerState": rf.powerState(), "Status": map[string]string{"State": "Enabled", "Health": "OK"},
		"Thermal": odataID(rfChassis + "/Thermal"), "Power": odataID(rfChassis + "/Power"),
		"Links": map[string]any{"ComputerSystems": []any{odataID(rfSystem)}, "ManagedBy": []any{odataID(rfManager)}},
	})
}

// sensorStatus is a reading's Redfish Status.
func sensorStatus(r SensorReading) map[string]string {
	if !r.Available {
		return map[string]string{"State": "StandbyOffline"}
	}
	h := map[string]string{"ok": "OK", "warning": "Warning", "critical": "Critical"}[r.Status]
	return map[string]string{"State": "Enabled", "Health": h}
}

func (rf *redfish) thermal(w http.ResponseWriter, r *http.Request) {
	temps, fans := []any{}, []any{}
	for _, rd := range readSensors(rf.power.PowerState() == On, time.Now()) {
		sp := rd.spec
		var val any
		if rd.Available {
			val = rd.Value
		}
		switch sp.Kind {
		case Temperature:
			m := map[string]any{
				"@odata.id": rfChassis + "/Thermal#/Temperatures/" + itoa(len(temps)), "MemberId": itoa(len(temps)),
				"Name": sp.Name, "SensorNumber": sp.Number, "ReadingCelsius": val, "Status": sensorStatus(rd),
			}
			if sp.UpperWarn > 0 {
				m["UpperThresholdNonCritical"] = sp.UpperWarn
			}
			if sp.UpperCrit > 0 {
				m["UpperThresholdCritical"] = sp.UpperCrit
			}
			temps = append(temps, m)
		case Fan:
			m := map[string]any{
				"@odata.id": rfChassis + "/Thermal#/Fans/" + itoa(len(fans)), "MemberId": itoa(len(fans)),
				"Name": sp.Name, "SensorNumber": sp.Number, "Reading": val, "ReadingUnits": "RPM", "Status": sensorStatus(rd),
			}
			if sp.LowerCrit > 0 {
				m["LowerThresholdCritical"] = sp.LowerCrit
			}
			fans = append(fans, m)
		}
	}
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfChassis + "/Thermal", "@odata.type": "#Thermal.v1_5_0.Thermal",
		"Id": "Thermal", "Name": "Thermal", "Temperatures": temps, "Fans": fans,
	})
}

func (rf *redfish) powerResource(w http.ResponseWriter, r *http.Request) {
	ctl := []any{}
	for _, rd := range readSensors(rf.power.PowerState() == On, time.Now()) {
		if rd.spec.Kind != PowerDraw {
			continue
		}
		ctl = append(ctl, map[string]any{
			"@odata.id": rfChassis + "/Power#/PowerControl/" + itoa(len(ctl)), "MemberId": itoa(len(ctl)),
			"Name": rd.spec.Name, "PowerConsumedWatts": rd.Value, "PowerCapacityWatts": 1100,
			"Status": sensorStatus(rd),
		})
	}
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfChassis + "/Power", "@odata.type": "#Power.v1_5_0.Power",
		"Id": "Power", "Name": "Power", "PowerControl": ctl,
	})
}

func (rf *redfish) manager(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.id": rfManager, "@odata.type": "#Manager.v1_5_0.Manager",
		"Id": "1", "Name": "Manager", "ManagerType": "BMC", "FirmwareVersion": "petrel-vbmc 1.0",
		"PowerState": "On", "Status": map[string]string{"State": "Enabled", "Health": "OK"},
		"Links": map[string]any{"ManagerForServers": []any{odataID(rfSystem)}, "ManagerForChassis": []any{odataID(rfChassis)}},
	})
}

func collection(typ, name string, members ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ms := []any{}
		for _, m := range members {
			ms = append(ms, odataID(m))
		}
		rfJSON(w, http.StatusOK, map[string]any{
			"@odata.id": r.URL.Path, "@odata.type": "#" + typ + "." + typ,
			"Name": name, "Members": ms, "Members@odata.count": len(ms),
		})
	}
}

func odataID(p string) map[string]string { return map[string]string{"@odata.id": p} }

func itoa(i int) string { return strconv.Itoa(i) }

func rfJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func rfError(w http.ResponseWriter, status int, id, msg string) {
	rfJSON(w, status, map[string]any{"error": map[string]any{
		"code": id, "message": msg,
		"@Message.ExtendedInfo": []any{map[string]any{"MessageId": id, "Message": msg, "Severity": "Critical"}},
	}})
}
