// Package ui is the web dashboard central serves at /: server-rendered HTML
// (html/template) and one small script that follows the API's event stream
// with the browser's EventSource. Sessions are HttpOnly, Secure,
// SameSite=Strict cookies holding a login token; every state change needs the
// session's CSRF token; a strict Content-Security-Policy forbids inline
// script. Everything is embedded in the binary.
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
	"sort"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// SiteRow is one subcloud on the fleet page.
type SiteRow struct {
	Name, Shape, Availability, Management, Status, LastSeen string
	Hosts                                                   int
}

// Config configures the dashboard.
type Config struct {
	Auth   *auth.Service
	Sites  func(ctx context.Context) ([]SiteRow, error)
	Site   func(ctx context.Context, name string) error // nil error if the subcloud exists
	Audit  func(ctx context.Context, user, role, action, target, result string)
	Logger *slog.Logger
}

// UI serves the dashboard.
type UI struct {
	cfg   Config
	pages *template.Template
	mux   *http.ServeMux
}

// New returns the dashboard handler.
func New(cfg Config) (*UI, error) {
	if cfg.Auth == nil || cfg.Sites == nil || cfg.Site == nil || cfg.Audit == nil || cfg.Logger == nil {
		return nil, errors.New("ui: Auth, Sites, Site, Audit and Logger are required")
	}
	pages, err := template.ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, pages: pages, mux: http.NewServeMux()}
	static, _ := fs.Sub(staticFS, "static")
	u.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	u.mux.HandleFunc("GET /ui/login", u.loginPage)
	u.mux.HandleFunc("POST /ui/login", u.login)
	u.mux.HandleFunc("POST /ui/logout", u.logout)
	u.mux.HandleFunc("GET /{$}", u.fleet)
	u.mux.HandleFunc("GET /ui/sites/{name}", u.site)
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
	Sites                                      []SiteRow
	Counts                                     map[string]int
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
	c, err := r.Cookie(auth.SessionCookie)
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
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: secret, Path: "/", HttpOnly: true, Secure: true,
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
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

func (u *UI) fleet(w http.ResponseWriter, r *http.Request) {
	p, secret, ok := u.session(r)
	if !ok {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	sites, err := u.cfg.Sites(r.Context())
	if err != nil {
		u.cfg.Logger.Error("fleet page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	sort.Slice(sites, func(i, j int) bool { return sites[i].Name < sites[j].Name })
	counts := map[string]int{"critical": 0, "degraded": 0, "ok": 0, "offline": 0}
	for _, s := range sites {
		counts[s.Status]++
	}
	u.render(w, http.StatusOK, "fleet.html", page{Title: "Fleet", Page: "fleet", User: p.User, Role: string(p.Role),
		CSRF: u.cfg.Auth.CSRFToken(secret), Sites: sites, Counts: counts})
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
	u.render(w, http.StatusOK, "site.html", page{Title: name, Page: "site", Site: name, User: p.User, Role: string(p.Role),
		CSRF: u.cfg.Auth.CSRFToken(secret)})
}
