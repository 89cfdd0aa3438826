// Package ui is the web dashboard that central and every site controller
// serve at /: server-rendered HTML (html/template) and one small script that
// follows central's event stream with the browser's EventSource and keeps the
// alarm banner current. Sessions are HttpOnly, Secure, SameSite=Strict
// cookies holding a login token; every state change needs the session's CSRF
// token; a strict Content-Security-Policy forbids inline script and style.
// Everything is embedded in the binary.
package ui

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// SiteRow is one subcloud on the fleet page.
type SiteRow struct {
	Name, Shape, Availability, Management, Status, LastSeen string
	// Sync is the subcloud's sync status over all its resources:
	// out-of-sync if any is, in-sync if all are, else unknown.
	Sync     string
	Software string // software version ("" until the site reports one)
	Alarms   faultmgr.Summary
	Hosts    int
}

// Config configures the dashboard.
type Config struct {
	Auth *auth.Service
	// LocalSite names the site whose controller serves this dashboard: its
	// home page shows that site. Empty at central, whose home page is the
	// fleet, and which then needs Sites and Site.
	LocalSite string
	Sites     func(ctx context.Context) ([]SiteRow, error)
	Site      func(ctx context.Context, name string) error // nil error if the subcloud exists
	// FleetVersion, if set, changes whenever a subcloud changes (central:
	// its event stream's head). The dashboard then reuses its last read
	// of Sites while the version stays the same, for at most
	// FleetCacheAge: a search or filter of a large fleet then costs no
	// store read.
	FleetVersion func() string
	// AlarmSummary counts the daemon's active, unsuppressed alarms: the
	// banner's first paint (the script keeps it current).
	AlarmSummary func(ctx context.Context) (faultmgr.Summary, error)
	Audit        func(ctx context.Context, user, role, action, target, result string)
	Logger       *slog.Logger
}

// UI serves the dashboard.
type UI struct {
	cfg       Config
	pages     *template.Template
	mux       *http.ServeMux
	fleetRows fleetCache
}

// New returns the dashboard handler.
func New(cfg Config) (*UI, error) {
	if cfg.Auth == nil || cfg.AlarmSummary == nil || cfg.Audit == nil || cfg.Logger == nil {
		return nil, errors.New("ui: Auth, AlarmSummary, Audit and Logger are required")
	}
	if cfg.LocalSite == "" && (cfg.Sites == nil || cfg.Site == nil) {
		return nil, errors.New("ui: central's dashboard (no LocalSite) needs Sites and Site")
	}
	pages, err := template.New("").Funcs(template.FuncMap{
		"list": func(v ...string) []string { return v },
		"add":  func(a, b int) int { return a + b },
		"strategyBox": func(scope, title, api string, p page) strategyBox {
			return strategyBox{Scope: scope, Title: title, API: api, Page: p}
		},
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, pages: pages, mux: http.NewServeMux()}
	static, _ := fs.Sub(staticFS, "static")
	u.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	u.mux.HandleFunc("GET /ui/login", u.loginPage)
	u.mux.HandleFunc("POST /ui/login", u.login)
	u.mux.HandleFunc("POST /ui/logout", u.logout)
	u.mux.HandleFunc("GET /ui/alarms", u.alarms)
	u.mux.HandleFunc("GET /ui/events", u.events)
	u.mux.HandleFunc("GET /ui/patching", u.patching)
	if cfg.LocalSite != "" {
		u.mux.HandleFunc("GET /{$}", u.localSite)
	} else {
		u.mux.HandleFunc("GET /{$}", u.fleet)
		u.mux.HandleFunc("GET /ui/fleet.json", u.fleetJSON)
		u.mux.HandleFunc("GET /ui/sites/{name}", u.site)
	}
	return u, nil
}

// ServeHTTP adds the security headers every dashboard answer carries.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
		h.Set("Cache-Control", "no-store")
	}
	u.mux.ServeHTTP(w, r)
}

// page is what every template sees.
type page struct {
	Title, Page, Site, User, Role, CSRF, Error string
	// Fleet is true at central: the fleet pages, the event stream, and a
	// site column and filter on the alarms page.
	Fleet bool
	// CanAct is true for callers who may change things (operator and up):
	// only they get action buttons. The API checks the role regardless.
	CanAct bool
	// CanAdmin is true for admins: strategies and patches need it.
	CanAdmin bool
	// API is where the site page and the patching page call the site's
	// API: "" at a site, the relay's /v1/subclouds/NAME/api at central.
	API   string
	Sites []SiteRow
	// SiteText: too many sites for a drop-down; a text field instead.
	SiteText bool
	Counts   map[string]int
	// The fleet page: its query and the page of rows it matched.
	FleetQuery FleetQuery
	View       FleetView
	// StreamFrom is the event stream's ID the page is current at (central):
	// the script's stream starts after it. "" = from now.
	StreamFrom string
	Banner     []bannerCount
	// The alarms page: its filter and the severities to choose from.
	Filter     alarmFilter
	Severities []faultmgr.Severity
	// The events page: its filter and the event types to choose from.
	Events     eventFilter
	EventTypes []string
}

// strategyBox is one patch strategy on the patching page: central's fleet
// strategy (API "") or a site's (API: where the site's API is).
type strategyBox struct {
	Scope, Title, API string
	Page              page
}

// eventFilter is the events page's query (GET /v1/events' filters).
type eventFilter struct {
	Type, AlarmID, Entity, User, Since string
}

// bannerCount is one severity of the alarm banner.
type bannerCount struct {
	Severity faultmgr.Severity
	N        int
	Known    bool // false: the summary could not be read
}

// alarmFilter is the alarms page's query: its form fields, kept in the
// page's URL so a filtered view can be bookmarked and shared.
type alarmFilter struct {
	Severity, AlarmID, Entity string
	Site                      string // "": every site; "-": central's own alarms; else a site's name
	Suppressed                bool   // list suppressed alarms too
}

// severities are the banner's and the filter's severities, worst first.
var severities = []faultmgr.Severity{faultmgr.Critical, faultmgr.Major, faultmgr.Minor, faultmgr.Warning}

// signedIn fills the parts of a page every signed-in view shows: who, the
// CSRF token, what the caller may do, and the alarm banner.
func (u *UI) signedIn(r *http.Request, p auth.Principal, secret string, pg page) page {
	pg.User, pg.Role, pg.CSRF = p.User, string(p.Role), u.cfg.Auth.CSRFToken(secret)
	pg.CanAct = p.Role.Allows(auth.Operator)
	pg.CanAdmin = p.Role.Allows(auth.Admin)
	pg.Fleet = u.cfg.LocalSite == ""
	if pg.StreamFrom == "" && u.cfg.FleetVersion != nil {
		pg.StreamFrom = u.cfg.FleetVersion()
	}
	sum, err := u.cfg.AlarmSummary(r.Context())
	if err != nil {
		u.cfg.Logger.Warn("alarm banner: summary", "err", err)
	}
	n := map[faultmgr.Severity]int{faultmgr.Critical: sum.Critical, faultmgr.Major: sum.Major,
		faultmgr.Minor: sum.Minor, faultmgr.Warning: sum.Warning}
	for _, sev := range severities {
		pg.Banner = append(pg.Banner, bannerCount{Severity: sev, N: n[sev], Known: err == nil})
	}
	return pg
}

func (u *UI) render(w http.ResponseWriter, status int, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := u.pages.ExecuteTemplate(w, name, p); err != nil {
		u.cfg.Logger.Error("render", "page", name, "err", err)
	}
}

// session returns the caller's principal and session token, or false.
func (u *UI) session(r *http.Request) (auth.Principal, string, bool) {
	c, err := r.Cookie(u.cfg.Auth.SessionCookie())
	if err != nil || c.Value == "" {
		return auth.Principal{}, "", false
	}
	p, err := u.cfg.Auth.Authenticate(r.Context(), c.Value)
	if err != nil {
		return auth.Principal{}, "", false
	}
	return p, c.Value, true
}

const loginCSRFCookie = "petrel_login_csrf"

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := u.session(r); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	u.renderLogin(w, r, http.StatusOK, "")
}

// renderLogin shows the form with a fresh double-submit CSRF token.
func (u *UI) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: tok, Path: "/ui/login", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 600})
	u.render(w, status, "login.html", page{Title: "Log in", Page: "login", CSRF: tok, Error: msg})
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		u.renderLogin(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	c, err := r.Cookie(loginCSRFCookie)
	if err != nil || c.Value == "" || r.PostFormValue("csrf_token") != c.Value {
		u.renderLogin(w, r, http.StatusForbidden, "The form expired; please try again.")
		return
	}
	user := r.PostFormValue("username")
	secret, tok, err := u.cfg.Auth.Login(r.Context(), user, r.PostFormValue("password"))
	if err != nil {
		u.cfg.Audit(r.Context(), user, "", "uiLogin", "POST /ui/login", errs.Code(err))
		msg := "Wrong user or password."
		if errors.Is(err, errs.RateLimited) {
			msg = "Too many failed attempts; wait 30 seconds."
		}
		u.renderLogin(w, r, http.StatusUnauthorized, msg)
		return
	}
	u.cfg.Audit(r.Context(), user, string(tok.Role), "uiLogin", "POST /ui/login", "ok")
	http.SetCookie(w, &http.Cookie{Name: u.cfg.Auth.SessionCookie(), Value: secret, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, Expires: tok.ExpiresAt, MaxAge: int(time.Until(tok.ExpiresAt) / time.Second)})
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: "", Path: "/ui/login", MaxAge: -1, HttpOnly: true, Secure: true})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil || !u.cfg.Auth.CheckCSRF(secret, r.PostFormValue("csrf_token")) {
		http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
		return
	}
	if err := u.cfg.Auth.Revoke(r.Context(), p, p.TokenID); err != nil {
		u.cfg.Logger.Warn("logout: revoke", "user", p.User, "err", err)
	}
	u.cfg.Audit(r.Context(), p.User, string(p.Role), "uiLogout", "POST /ui/logout", "ok")
	http.SetCookie(w, &http.Cookie{Name: u.cfg.Auth.SessionCookie(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

func (u *UI) site(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	name := r.PathValue("name")
	if err := u.cfg.Site(r.Context(), name); err != nil {
		http.NotFound(w, r)
		return
	}
	u.render(w, http.StatusOK, "site.html", u.signedIn(r, p, secret, page{Title: name, Page: "site", Site: name,
		API: relayBase(name)}))
}

// relayBase is where central relays calls to a site's API.
func relayBase(site string) string { return "/v1/subclouds/" + url.PathEscape(site) + "/api" }

// localSite is a site controller's home page: the site itself.
func (u *UI) localSite(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	name := u.cfg.LocalSite
	u.render(w, http.StatusOK, "site.html", u.signedIn(r, p, secret, page{Title: name, Page: "site", Site: name}))
}

// events is the event history page: fault-log and audit events from
// GET /v1/events, filtered by the query in the page's URL (the script
// reads it and pages through the API's list).
func (u *UI) events(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	q := r.URL.Query()
	u.render(w, http.StatusOK, "events.html", u.signedIn(r, p, secret, page{Title: "Events", Page: "events",
		Events: eventFilter{Type: q.Get("type"), AlarmID: q.Get("alarm_id"), Entity: q.Get("entity"), User: q.Get("user"),
			Since: q.Get("since")}, EventTypes: []string{"set", "clear", "log", "audit"}}))
}

// patching is the patching page: a site's patches and its patch strategy
// (at a site; at central for the site named by ?site=), and at central the
// fleet patch strategy.
func (u *UI) patching(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	pg := page{Title: "Patching", Page: "patching"}
	if u.cfg.LocalSite != "" {
		pg.Site = u.cfg.LocalSite
	} else {
		sites, _, err := u.sites(r.Context())
		if err != nil {
			u.cfg.Logger.Error("patching page: sites", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		if len(sites) <= maxSiteChoices {
			pg.Sites = sites
		} else {
			pg.SiteText = true
		}
		if name := r.URL.Query().Get("site"); name != "" {
			if err := u.cfg.Site(r.Context(), name); err != nil {
				pg.Error = "No subcloud " + name + "."
			} else {
				pg.Site, pg.API = name, relayBase(name)
			}
		}
	}
	u.render(w, http.StatusOK, "patching.html", u.signedIn(r, p, secret, pg))
}

// maxSiteChoices is the most sites a page offers in a drop-down; with more,
// the field is free text.
const maxSiteChoices = 500

// alarms is the alarms page. The rows come from GET /v1/alarms in the
// browser (the script pages, filters and refreshes them), so the page and
// the API show one truth; the server renders the frame and the filter form.
func (u *UI) alarms(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	q := r.URL.Query()
	pg := u.signedIn(r, p, secret, page{Title: "Alarms", Page: "alarms", Filter: alarmFilter{
		Severity: q.Get("severity"), AlarmID: q.Get("alarm_id"), Entity: q.Get("entity"),
		Site: q.Get("site"), Suppressed: q.Get("suppressed") == "include"}, Severities: severities})
	if pg.Fleet {
		sites, _, err := u.sites(r.Context())
		if err != nil {
			u.cfg.Logger.Error("alarms page: sites", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		if len(sites) <= maxSiteChoices {
			pg.Sites = sites
		} else {
			pg.SiteText = true
		}
	}
	u.render(w, http.StatusOK, "alarms.html", pg)
}
