package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// Require returns a guard that admits callers holding a valid token with at
// least role need: 401 without valid credentials, 403 with too small a role.
// Tokens come as "Authorization: Bearer T" or, for OpenStack clients,
// "X-Auth-Token: T".
func (s *Service) Require(need Role) rest.Guard {
	return func(r *http.Request) (*http.Request, error) {
		secret, assertion := bearer(r), r.Header.Get(AssertionHeader)
		var p Principal
		var err error
		if secret == "" && assertion == "" {
			// A browser session: its cookie authenticates, and any state
			// change also needs the session's CSRF token.
			if c, cerr := r.Cookie(s.SessionCookie()); cerr == nil && c.Value != "" {
				if r.Method != http.MethodGet && r.Method != http.MethodHead &&
					!s.CheckCSRF(c.Value, r.Header.Get(CSRFHeader)) {
					return nil, errs.Wrapf(errs.Forbidden, "missing or wrong CSRF token")
				}
				secret = c.Value
			}
		}
		switch {
		case assertion != "" && secret != "":
			// A relay strips Authorization; both at once is not a relayed call.
			return nil, errs.Wrapf(errs.Unauthenticated, "send a token or a relay assertion, not both")
		case assertion != "":
			// Only calls that came over the site's link to central, never
			// its public listener, may carry one.
			if s.verifier == nil || r.Context().Value(viaLinkKey{}) == nil {
				return nil, errs.Wrapf(errs.Unauthenticated, "relay assertions are accepted only from central's link")
			}
			p, err = s.verifier.Verify(assertion, r.Method, r.URL.EscapedPath())
		case secret != "":
			p, err = s.Authenticate(r.Context(), secret)
		default:
			return nil, errs.Wrapf(errs.Unauthenticated, "credentials required: send Authorization: Bearer <token>")
		}
		if err != nil {
			return nil, err
		}
		rest.Annotate(r.Context(), "user", p.User)
		rest.Annotate(r.Context(), "role", string(p.Role))
		if !p.Role.Allows(need) {
			return nil, errs.Wrapf(errs.Forbidden, "role %s may not do this; it needs %s", p.Role, need)
		}
		return r.WithContext(WithPrincipal(r.Context(), p)), nil
	}
}

func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.Header.Get("X-Auth-Token")
}

// Register adds the login, user and token routes to srv.
func (s *Service) Register(srv *rest.Server) {
	srv.HandlePublic("login", http.MethodPost, "/v1/login", s.login)
	srv.Handle("whoami", http.MethodGet, "/v1/whoami", s.Require(Reader), s.whoami)
	srv.Handle("listUsers", http.MethodGet, "/v1/users", s.Require(Admin), s.listUsers)
	srv.Handle("createUser", http.MethodPost, "/v1/users", s.Require(Admin), s.createUser)
	srv.Handle("getUser", http.MethodGet, "/v1/users/{name}", s.Require(Reader), s.getUser)
	srv.Handle("deleteUser", http.MethodDelete, "/v1/users/{name}", s.Require(Admin), s.deleteUser)
	srv.Handle("setPassword", http.MethodPut, "/v1/users/{name}/password", s.Require(Reader), s.setPassword)
	srv.Handle("listTokens", http.MethodGet, "/v1/tokens", s.Require(Reader), s.listTokens)
	srv.Handle("createToken", http.MethodPost, "/v1/tokens", s.Require(Reader), s.createToken)
	srv.Handle("getToken", http.MethodGet, "/v1/tokens/{id}", s.Require(Reader), s.getToken)
	srv.Handle("revokeToken", http.MethodDelete, "/v1/tokens/{id}", s.Require(Reader), s.revokeToken)
	srv.Handle("listProjects", http.MethodGet, "/v1/projects", s.Require(Admin), s.listProjects)
	srv.Handle("createProject", http.MethodPost, "/v1/projects", s.Require(Admin), s.createProject)
	srv.Handle("getProject", http.MethodGet, "/v1/projects/{name}", s.Require(Reader), s.getProject)
	srv.Handle("deleteProject", http.MethodDelete, "/v1/projects/{name}", s.Require(Admin), s.deleteProject)
}

// LoginRequest is the body of POST /v1/login.
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// IssuedToken is the answer to a login or token creation: the secret, shown
// once, and the token's description.
type IssuedToken struct {
	Token  string `json:"token"`
	Detail Token  `json:"detail"`
}

func (s *Service) login(r *http.Request) (int, any, error) {
	var req LoginRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	rest.Annotate(r.Context(), "user", req.Username)
	if req.Username == "" {
		return 0, nil, errs.Field("username", "is required")
	}
	if req.Password == "" {
		return 0, nil, errs.Field("password", "is required")
	}
	secret, t, err := s.Login(r.Context(), req.Username, req.Password)
	if err != nil {
		return 0, nil, err
	}
	rest.Annotate(r.Context(), "role", string(t.Role))
	return http.StatusCreated, IssuedToken{Token: secret, Detail: t}, nil
}

// WhoAmI describes the caller.
type WhoAmI struct {
	User    string `json:"user"`
	Role    Role   `json:"role"`
	TokenID string `json:"token_id"`
	Project string `json:"project"`
}

func (s *Service) whoami(r *http.Request) (int, any, error) {
	p := mustPrincipal(r.Context())
	return http.StatusOK, WhoAmI{User: p.User, Role: p.Role, TokenID: p.TokenID, Project: p.ProjectName()}, nil
}

func (s *Service) listUsers(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, "role", "project")
	if err != nil {
		return 0, nil, err
	}
	if v, ok := opts.Filters["role"]; ok {
		if _, err := ParseRole("role", v); err != nil {
			return 0, nil, err
		}
	}
	users, next, err := s.cfg.Store.Users(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[User]{Items: users, NextPageToken: rest.EncodePageToken(next)}, nil
}

// CreateUserRequest is the body of POST /v1/users.
type CreateUserRequest struct {
	Name     string `json:"name"`
	Role     Role   `json:"role"`
	Project  string `json:"project,omitempty"` // default admin
	Password string `json:"password"`
}

func (s *Service) createUser(r *http.Request) (int, any, error) {
	var req CreateUserRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if _, err := ParseRole("role", string(req.Role)); err != nil {
		return 0, nil, err
	}
	u, err := s.CreateProjectUser(r.Context(), req.Name, req.Role, req.Project, req.Password)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, u, nil
}

// CreateProjectRequest is the body of POST /v1/projects.
type CreateProjectRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

func (s *Service) listProjects(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r)
	if err != nil {
		return 0, nil, err
	}
	items, next, err := s.cfg.Store.Projects(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[Project]{Items: items, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (s *Service) createProject(r *http.Request) (int, any, error) {
	var req CreateProjectRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	p, err := s.CreateProject(r.Context(), req.Name, req.Description)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, p, nil
}

// getProject shows a project to admins and to its own members.
func (s *Service) getProject(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	if p := mustPrincipal(r.Context()); p.ProjectName() != name && !p.Role.Allows(Admin) {
		return 0, nil, fmt.Errorf("%w: %s", ErrProjectNotFound, name) // others' projects are not revealed
	}
	p, err := s.cfg.Store.Project(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, p, nil
}

func (s *Service) deleteProject(r *http.Request) (int, any, error) {
	if err := s.DeleteProject(r.Context(), rest.Var(r, "name")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Service) getUser(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	if err := selfOrAdmin(r.Context(), name); err != nil {
		return 0, nil, err
	}
	u, _, err := s.cfg.Store.User(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, u, nil
}

func (s *Service) deleteUser(r *http.Request) (int, any, error) {
	if err := s.DeleteUser(r.Context(), rest.Var(r, "name")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// PasswordRequest is the body of PUT /v1/users/{name}/password.
type PasswordRequest struct {
	Password string `json:"password"`
}

func (s *Service) setPassword(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	if err := selfOrAdmin(r.Context(), name); err != nil {
		return 0, nil, err
	}
	var req PasswordRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if err := s.SetPassword(r.Context(), name, req.Password); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Service) listTokens(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r, "user")
	if err != nil {
		return 0, nil, err
	}
	p := mustPrincipal(r.Context())
	user, ok := opts.Filters["user"]
	if !ok && !p.Role.Allows(Admin) {
		user = p.User // non-admins list their own tokens
	}
	if user != p.User && !p.Role.Allows(Admin) {
		return 0, nil, errs.Wrapf(errs.Forbidden, "only an admin may list other users' tokens")
	}
	toks, next, err := s.cfg.Store.Tokens(r.Context(), user, opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[Token]{Items: toks, NextPageToken: rest.EncodePageToken(next)}, nil
}

// CreateTokenRequest is the body of POST /v1/tokens.
type CreateTokenRequest struct {
	User        string `json:"user,omitempty"`
	Role        Role   `json:"role,omitempty"`
	Description string `json:"description,omitempty"`
	TTLSeconds  int64  `json:"ttl_s,omitempty"`
}

func (s *Service) createToken(r *http.Request) (int, any, error) {
	var req CreateTokenRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(s.cfg.MaxTTL/time.Second) {
		return 0, nil, errs.Field("ttl_s", "must be from 60 to %d seconds", int64(s.cfg.MaxTTL/time.Second))
	}
	if req.Role != "" {
		if _, err := ParseRole("role", string(req.Role)); err != nil {
			return 0, nil, err
		}
	}
	if req.User != "" {
		if err := ValidateUserName("user", req.User); err != nil {
			return 0, nil, err
		}
	}
	secret, t, err := s.CreateToken(r.Context(), mustPrincipal(r.Context()), TokenRequest{
		User: req.User, Role: req.Role, Description: req.Description,
		TTL: time.Duration(req.TTLSeconds) * time.Second,
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, IssuedToken{Token: secret, Detail: t}, nil
}

func (s *Service) getToken(r *http.Request) (int, any, error) {
	t, err := s.Token(r.Context(), mustPrincipal(r.Context()), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, t, nil
}

func (s *Service) revokeToken(r *http.Request) (int, any, error) {
	if err := s.Revoke(r.Context(), mustPrincipal(r.Context()), rest.Var(r, "id")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func selfOrAdmin(ctx context.Context, name string) error {
	p := mustPrincipal(ctx)
	if p.User != name && !p.Role.Allows(Admin) {
		return errs.Wrapf(errs.Forbidden, "only an admin may act on another user")
	}
	return nil
}

// mustPrincipal returns the caller; a route reaching it without a guard is a
// programming error.
func mustPrincipal(ctx context.Context) Principal {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		panic("auth: handler reached without a guard")
	}
	return p
}

// BootstrapAdmin is the name of the first admin.
const BootstrapAdmin = "admin"

// Bootstrap creates the first admin when the store has no users, with a
// random password written to passwordFile (mode 0600), never logged. It
// reports whether it created the account.
func (s *Service) Bootstrap(ctx context.Context, passwordFile string) (bool, error) {
	n, err := s.cfg.Store.CountUsers(ctx)
	if err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, fmt.Errorf("auth: no randomness: %w", err)
	}
	pw := base64.RawURLEncoding.EncodeToString(b[:])
	// The file first: a crash between the two steps leaves a password for an
	// account that a restart creates, never an account nobody can log in to.
	if err := atomicfile.Write(passwordFile, []byte(pw+"\n"), 0o600); err != nil {
		return false, err
	}
	if _, err := s.CreateUser(ctx, BootstrapAdmin, Admin, pw); err != nil {
		if errors.Is(err, ErrUserExists) {
			return false, nil
		}
		return false, err
	}
	s.cfg.Logger.Info("created the bootstrap admin; its password is in the file named", "user", BootstrapAdmin, "password_file", passwordFile)
	return true, nil
}

// ReadSecretFile reads a secret passed as a file, refusing files that others
// can read (ENGINEERING.md: secrets travel as 0600 files).
func ReadSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by others (mode %o); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Browser sessions.
const (
	SessionCookie = "petrel_session" // the default name: HttpOnly, Secure, SameSite=Strict; holds a login token
	CSRFHeader    = "X-CSRF-Token"   // or the csrf_token form field on dashboard forms
)

// SessionCookie is the name of this service's browser session cookie.
func (s *Service) SessionCookie() string {
	if s.cfg.SessionCookie != "" {
		return s.cfg.SessionCookie
	}
	return SessionCookie
}

// CSRFToken is the CSRF token of a browser session: an HMAC of the session
// token under a key that never leaves the daemon.
func (s *Service) CSRFToken(session string) string {
	m := hmac.New(sha256.New, s.csrfKey[:])
	m.Write([]byte("csrf:" + session))
	return hex.EncodeToString(m.Sum(nil))
}

// CheckCSRF reports whether token is the session's CSRF token.
func (s *Service) CheckCSRF(session, token string) bool {
	return token != "" && hmac.Equal([]byte(token), []byte(s.CSRFToken(session)))
}

type viaLinkKey struct{}

// ViaLink marks requests h serves as having arrived over the link to
// central: only those may authenticate with a relay assertion.
func ViaLink(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), viaLinkKey{}, true)))
	})
}
