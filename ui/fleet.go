package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FleetCacheAge bounds how long the dashboard reuses a read of the fleet
// whose version has not changed (a change that published nothing shows
// within it).
const FleetCacheAge = 5 * time.Second

// fleetCache is the last read of the fleet, sorted by name, with the
// version it was read at. Its rows are shared and never modified.
type fleetCache struct {
	mu      sync.Mutex // held during a read: concurrent requests share it
	version string
	at      time.Time
	rows    []SiteRow
}

// sites returns the fleet sorted by name, from the cache when it is
// current, and the fleet version read before it ("" without
// FleetVersion): the page's event stream resumes from there, so no change
// after the read is missed. The slice is shared: callers must not modify
// it.
func (u *UI) sites(ctx context.Context) ([]SiteRow, string, error) {
	if u.cfg.FleetVersion == nil {
		rows, err := u.cfg.Sites(ctx)
		slices.SortFunc(rows, func(a, b SiteRow) int { return strings.Compare(a.Name, b.Name) })
		return rows, "", err
	}
	c := &u.fleetRows
	c.mu.Lock()
	defer c.mu.Unlock()
	// The version is taken before the read: a change during it makes the
	// next request read again.
	v := u.cfg.FleetVersion()
	if c.rows != nil && c.version == v && time.Since(c.at) < FleetCacheAge {
		return c.rows, v, nil
	}
	at := time.Now()
	rows, err := u.cfg.Sites(ctx)
	if err != nil {
		return nil, "", err
	}
	slices.SortFunc(rows, func(a, b SiteRow) int { return strings.Compare(a.Name, b.Name) })
	if rows == nil {
		rows = []SiteRow{}
	}
	c.version, c.at, c.rows = v, at, rows
	return rows, v, nil
}

// The fleet page filters, searches and pages on the server: a browser gets
// at most one page of rows (FleetQuery.Limit) however large the fleet, and
// the script replaces only that page when a filter changes.

// Fleet page sizes.
const (
	DefaultFleetLimit = 100
	MaxFleetLimit     = 500
)

// FleetQuery is the fleet page's filter, search and page, from its URL.
type FleetQuery struct {
	Q            string // a substring of the subcloud's name (case-insensitive)
	Status       string // ok | degraded | critical | offline
	Availability string // online | offline
	Management   string // managed | unmanaged
	Sync         string // in-sync | out-of-sync | unknown
	Offset       int
	Limit        int
}

// The values each filter accepts ("" = any).
var fleetChoices = map[string][]string{
	"status":       {"critical", "degraded", "ok", "offline"},
	"availability": {"online", "offline"},
	"management":   {"managed", "unmanaged"},
	"sync":         {"in-sync", "out-of-sync", "unknown"},
}

// ParseFleetQuery reads a fleet query from a URL's parameters; a bad value
// is an error naming the parameter.
func ParseFleetQuery(v url.Values) (FleetQuery, error) {
	q := FleetQuery{Q: strings.TrimSpace(v.Get("q")), Status: v.Get("status"), Availability: v.Get("availability"),
		Management: v.Get("management"), Sync: v.Get("sync"), Limit: DefaultFleetLimit}
	if len(q.Q) > 253 {
		return q, fmt.Errorf("q: at most 253 characters")
	}
	for name, val := range map[string]string{"status": q.Status, "availability": q.Availability, "management": q.Management, "sync": q.Sync} {
		if val != "" && !slices.Contains(fleetChoices[name], val) {
			return q, fmt.Errorf("%s: must be one of %s", name, strings.Join(fleetChoices[name], ", "))
		}
	}
	if s := v.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("offset: must be a whole number, 0 or more")
		}
		q.Offset = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxFleetLimit {
			return q, fmt.Errorf("limit: must be 1 to %d", MaxFleetLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// Values is q as URL parameters (empty ones left out), offset replaced.
func (q FleetQuery) Values(offset int) url.Values {
	v := url.Values{}
	for k, val := range map[string]string{"q": q.Q, "status": q.Status, "availability": q.Availability, "management": q.Management, "sync": q.Sync} {
		if val != "" {
			v.Set(k, val)
		}
	}
	if offset > 0 {
		v.Set("offset", strconv.Itoa(offset))
	}
	if q.Limit != DefaultFleetLimit {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

func (q FleetQuery) match(s SiteRow) bool {
	return (q.Status == "" || s.Status == q.Status) && (q.Availability == "" || s.Availability == q.Availability) &&
		(q.Management == "" || s.Management == q.Management) && (q.Sync == "" || s.Sync == q.Sync) &&
		(q.Q == "" || strings.Contains(strings.ToLower(s.Name), strings.ToLower(q.Q)))
}

// FleetView is one page of the fleet: the counts of the whole fleet (the
// banner), how many subclouds match the query, and the matching rows from
// Offset, sorted by name.
type FleetView struct {
	Counts  map[string]int `json:"counts"` // critical, degraded, ok, offline: the whole fleet
	Total   int            `json:"total"`
	Matched int            `json:"matched"`
	Offset  int            `json:"offset"`
	Limit   int            `json:"limit"`
	Rows    []SiteRow      `json:"rows"`
	// Prev and Next are the query strings of the neighbouring pages ("" if none).
	Prev string `json:"prev"`
	Next string `json:"next"`
}

// Filter computes the view of sites for q. sites must be sorted by name.
func Filter(sites []SiteRow, q FleetQuery) FleetView {
	v := FleetView{Counts: map[string]int{"critical": 0, "degraded": 0, "ok": 0, "offline": 0}, Total: len(sites),
		Offset: q.Offset, Limit: q.Limit, Rows: []SiteRow{}}
	for _, s := range sites {
		v.Counts[s.Status]++
		if !q.match(s) {
			continue
		}
		if v.Matched >= q.Offset && len(v.Rows) < q.Limit {
			v.Rows = append(v.Rows, s)
		}
		v.Matched++
	}
	if q.Offset > 0 {
		v.Prev = "?" + q.Values(max(0, q.Offset-q.Limit)).Encode()
	}
	if q.Offset+q.Limit < v.Matched {
		v.Next = "?" + q.Values(q.Offset+q.Limit).Encode()
	}
	return v
}

// MarshalJSON writes a row as the script reads it (the API's names).
func (s SiteRow) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"name": s.Name, "shape": s.Shape, "availability": s.Availability,
		"management": s.Management, "status": s.Status, "sync": s.Sync, "software_version": s.Software,
		"alarm_summary": s.Alarms, "hosts": s.Hosts, "last_seen": s.LastSeen})
}

// fleetView reads the fleet and computes the view for the request's
// query, with the fleet version it is current at.
func (u *UI) fleetView(r *http.Request) (FleetQuery, FleetView, string, error, error) {
	q, qerr := ParseFleetQuery(r.URL.Query())
	if qerr != nil {
		q = FleetQuery{Limit: DefaultFleetLimit}
	}
	sites, version, err := u.sites(r.Context())
	if err != nil {
		return q, FleetView{}, "", qerr, err
	}
	return q, Filter(sites, q), version, qerr, nil
}

func (u *UI) fleet(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	q, view, version, qerr, err := u.fleetView(r)
	if err != nil {
		u.cfg.Logger.Error("fleet page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	pg := u.signedIn(r, p, secret, page{Title: "Fleet", Page: "fleet", FleetQuery: q, View: view, Counts: view.Counts,
		StreamFrom: version})
	status := http.StatusOK
	if qerr != nil {
		pg.Error, status = "Bad filter: "+qerr.Error()+"; showing the whole fleet.", http.StatusBadRequest
	}
	u.render(w, status, "fleet.html", pg)
}

// fleetJSON is the fleet page's view as JSON: the script fetches it when a
// filter changes and, at most once a second, after the stream reports
// changes, so the counts and the page's membership stay current without
// the browser ever holding more than a page of rows.
func (u *UI) fleetJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if _, _, ok := u.session(r); !ok {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "unauthenticated", "message": "the session ended; log in again"}})
		return
	}
	_, view, _, qerr, err := u.fleetView(r)
	if qerr != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "invalid_argument", "message": qerr.Error()}})
		return
	}
	if err != nil {
		u.cfg.Logger.Error("fleet view", "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "internal", "message": "internal error"}})
		return
	}
	json.NewEncoder(w).Encode(view)
}
