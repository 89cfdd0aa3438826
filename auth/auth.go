// Package auth authenticates and authorises API callers: users with roles
// (admin, operator, reader), passwords hashed with argon2id and only exchanged
// for tokens, and API tokens — 256-bit random secrets stored as SHA-256
// hashes — that expire and can be listed and revoked.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// Role is what a caller may do. Each role includes the ones below it.
type Role string

const (
	Reader   Role = "reader"   // read everything
	Operator Role = "operator" // also change the cloud: hosts, servers, patches, ...
	Admin    Role = "admin"    // also manage users, others' tokens, webhooks
)

var roleRank = map[Role]int{Reader: 1, Operator: 2, Admin: 3}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { _, ok := roleRank[r]; return ok }

// Allows reports whether a caller with role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r.Valid() && roleRank[r] >= roleRank[need] }

// ParseRole validates a role named in a request field.
func ParseRole(field, s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", errs.Field(field, "must be admin, operator or reader, not %q", s)
	}
	return r, nil
}

// Errors of this package; each wraps an errs kind.
var (
	ErrUserNotFound  = errs.New(errs.NotFound, "user not found")
	ErrUserExists    = errs.New(errs.Conflict, "user already exists")
	ErrLastAdmin     = errs.New(errs.Conflict, "cannot delete the last admin")
	ErrTokenNotFound = errs.New(errs.NotFound, "token not found")
	// ErrProjectNotFound: no such project.
	ErrProjectNotFound = errs.New(errs.NotFound, "project not found")
	ErrProjectExists   = errs.New(errs.Conflict, "project already exists")
	// ErrProjectInUse: a project with users, or the admin project, cannot
	// be deleted.
	ErrProjectInUse = errs.New(errs.Conflict, "project in use")
	// ErrBadCredentials covers unknown users, wrong passwords and unknown,
	// expired or revoked tokens alike, so a caller learns nothing from it.
	ErrBadCredentials = errs.New(errs.Unauthenticated, "invalid credentials")
)

// User is an account. It belongs to one project.
type User struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Project   string    `json:"project"`
	CreatedAt time.Time `json:"created_at"`
}

// SyncedUser is a user as central's sync carries it to sites: with its
// password hash (argon2id, PHC), so a site checks logins by itself, also
// while central is away. The hash never leaves a TLS frame or a database.
type SyncedUser struct {
	Name         string       `json:"name"`
	Role         Role         `json:"role"`
	Project      string       `json:"project"`
	PasswordHash PasswordHash `json:"password_hash"`
}

// PasswordHash is a stored password hash (PHC string). It prints and logs
// as [redacted]; only JSON (sync frames, the database) carries it.
type PasswordHash string

func (PasswordHash) String() string { return "[redacted]" }

// LogValue keeps the hash out of structured logs.
func (PasswordHash) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// GoString keeps the hash out of %#v.
func (PasswordHash) GoString() string { return "[redacted]" }

// Project is a tenant (a Keystone project in domain Default): it owns
// users, servers, and non-public images and flavors. Its Keystone ID is its
// name. The admin project (DefaultProject) always exists; its admins see
// every project's resources.
type Project struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
}

// Token describes an API token. The secret itself is shown once, at creation,
// and never stored.
type Token struct {
	ID          string     `json:"id"`
	User        string     `json:"user"`
	Role        Role       `json:"role"`    // the token's scope: at most its user's role
	Project     string     `json:"project"` // its user's project
	Description string     `json:"description"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
}

// Active reports whether the token can still be used at now.
func (t Token) Active(now time.Time) bool { return t.RevokedAt == nil && now.Before(t.ExpiresAt) }

// Principal is an authenticated caller.
type Principal struct {
	User    string
	Role    Role
	TokenID string
	// Project is the Keystone project the caller acts in; "" means the
	// admin project (DefaultProject).
	Project string
}

// DefaultProject is Keystone's admin project: users created without a
// project belong to it.
const DefaultProject = "admin"

// ProjectName is the caller's project, DefaultProject if unset.
func (p Principal) ProjectName() string {
	if p.Project == "" {
		return DefaultProject
	}
	return p.Project
}

// Store keeps projects, users and tokens. Implementations: authdb (gorm).
// The admin project always exists.
type Store interface {
	CreateProject(ctx context.Context, p Project) error // ErrProjectExists
	Project(ctx context.Context, name string) (Project, error)
	Projects(ctx context.Context, opts rest.ListOptions) ([]Project, string, error)
	// DeleteProject removes a project; ErrProjectInUse if it has users or is
	// the admin project.
	DeleteProject(ctx context.Context, name string) error
	// CreateUser records a user of an existing project: ErrUserExists, or
	// ErrProjectNotFound.
	CreateUser(ctx context.Context, u User, passwordHash string) error
	User(ctx context.Context, name string) (User, string, error) // user and password hash; ErrUserNotFound
	Users(ctx context.Context, opts rest.ListOptions) ([]User, string, error)
	SetPassword(ctx context.Context, name, passwordHash string) error
	// DeleteUser removes the user and revokes its tokens at now, in one
	// transaction; it refuses to remove the last admin (ErrLastAdmin).
	DeleteUser(ctx context.Context, name string, now time.Time) error
	CountUsers(ctx context.Context) (int64, error)
	CreateToken(ctx context.Context, t Token, secretHash string) error
	// TokenByHash returns the token with its user's current role.
	TokenByHash(ctx context.Context, secretHash string) (Token, Role, error)
	Token(ctx context.Context, id string) (Token, error)
	Tokens(ctx context.Context, user string, opts rest.ListOptions) ([]Token, string, error)
	RevokeToken(ctx context.Context, id string, at time.Time) error
}

// Config configures a Service.
type Config struct {
	Store    Store        // required
	Logger   *slog.Logger // required
	LoginTTL time.Duration
	MaxTTL   time.Duration
	Now      func() time.Time
	// SessionCookie names the browser session cookie; default
	// "petrel_session". Daemons on one host differ by port only, which
	// cookies ignore, so each site's controller names its own.
	SessionCookie string
}

// Defaults.
const (
	DefaultLoginTTL = 12 * time.Hour
	DefaultMaxTTL   = 365 * 24 * time.Hour
	// cacheTTL is how long a verified token is trusted without a look at
	// the store; up to twice that, a request is answered from the cache
	// while one lookup refreshes it in the background (so the expiry of a
	// busy token never sends every request to the database at once). A
	// revocation elsewhere takes effect within 2 × cacheTTL.
	cacheTTL    = 5 * time.Second
	cacheMax    = 10000
	tokenPrefix = "pt_"
)

// Service is the authentication and authorisation service of one daemon.
type Service struct {
	cfg      Config
	verifier *AssertionVerifier // relayed calls from central; nil: not accepted
	csrfKey  [32]byte           // keys CSRF tokens of browser sessions
	mu       sync.Mutex
	cache    map[string]cached  // secret hash -> verified principal
	gen      uint64             // bumps on every revocation: a lookup that raced one is not cached
	lookups  singleflight.Group // one store lookup per token at a time
	limiter  loginLimiter
	hashing  chan struct{} // bounds concurrent password hashing (19 MiB each)
}

type cached struct {
	p       Principal
	expires time.Time // the token's own expiry
	checked time.Time
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Logger == nil {
		return nil, errors.New("auth: Store and Logger are required")
	}
	if cfg.LoginTTL == 0 {
		cfg.LoginTTL = DefaultLoginTTL
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Now().UTC() }
	}
	s := &Service{cfg: cfg, cache: map[string]cached{}, limiter: loginLimiter{fails: map[string]*failures{}},
		hashing: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}
	if _, err := rand.Read(s.csrfKey[:]); err != nil {
		return nil, err
	}
	return s, nil
}

var (
	namePattern    = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,62}$`)
	projectPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

// ValidateProjectName checks a project name (compute.ValidateProject
// accepts the same names).
func ValidateProjectName(field, name string) error {
	if !projectPattern.MatchString(name) {
		return errs.Field(field, "must be 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit")
	}
	return nil
}

// ValidateUserName checks a user name.
func ValidateUserName(field, name string) error {
	if !namePattern.MatchString(name) {
		return errs.Field(field, "must be 1-63 characters: a lower-case letter, then lower-case letters, digits, '.', '_' or '-'")
	}
	return nil
}

// Password length limits.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 1024
)

func validatePassword(field, pw string) error {
	if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen {
		return errs.Field(field, "must be %d to %d characters", MinPasswordLen, MaxPasswordLen)
	}
	return nil
}

// AcceptAssertions makes the guards accept central's relay assertions,
// verified by v. Call it before serving.
func (s *Service) AcceptAssertions(v *AssertionVerifier) { s.verifier = v }

// CreateUser creates a user of the admin project with a password.
func (s *Service) CreateUser(ctx context.Context, name string, role Role, password string) (User, error) {
	return s.CreateProjectUser(ctx, name, role, DefaultProject, password)
}

// CreateProjectUser creates a user of project ("" for the admin project)
// with a password; an unknown project is an invalid argument.
func (s *Service) CreateProjectUser(ctx context.Context, name string, role Role, project, password string) (User, error) {
	if err := ValidateUserName("name", name); err != nil {
		return User{}, err
	}
	if !role.Valid() {
		return User{}, errs.Field("role", "must be admin, operator or reader")
	}
	if project == "" {
		project = DefaultProject
	}
	if err := ValidateProjectName("project", project); err != nil {
		return User{}, err
	}
	if err := validatePassword("password", password); err != nil {
		return User{}, err
	}
	u := User{Name: name, Role: role, Project: project, CreatedAt: s.cfg.Now()}
	if err := s.cfg.Store.CreateUser(ctx, u, hashPassword(password)); err != nil {
		if errors.Is(err, ErrProjectNotFound) {
			return User{}, errs.Field("project", "no project %q; create it first (POST /v1/projects)", project)
		}
		return User{}, err
	}
	return u, nil
}

// CreateProject creates a project.
func (s *Service) CreateProject(ctx context.Context, name, description string) (Project, error) {
	if err := ValidateProjectName("name", name); err != nil {
		return Project{}, err
	}
	if len(description) > 200 {
		return Project{}, errs.Field("description", "must be at most 200 characters")
	}
	p := Project{Name: name, Description: description, CreatedAt: s.cfg.Now()}
	if err := s.cfg.Store.CreateProject(ctx, p); err != nil {
		return Project{}, err
	}
	return p, nil
}

// Project returns a project.
func (s *Service) Project(ctx context.Context, name string) (Project, error) {
	return s.cfg.Store.Project(ctx, name)
}

// Projects lists projects by name.
func (s *Service) Projects(ctx context.Context, opts rest.ListOptions) ([]Project, string, error) {
	return s.cfg.Store.Projects(ctx, opts)
}

// User returns a user.
func (s *Service) User(ctx context.Context, name string) (User, error) {
	u, _, err := s.cfg.Store.User(ctx, name)
	return u, err
}

// DeleteProject removes a project that has no users; the admin project
// stays.
func (s *Service) DeleteProject(ctx context.Context, name string) error {
	if name == DefaultProject {
		return fmt.Errorf("%w: the admin project cannot be deleted", ErrProjectInUse)
	}
	return s.cfg.Store.DeleteProject(ctx, name)
}

// SetPassword changes a user's password. Existing tokens stay valid.
func (s *Service) SetPassword(ctx context.Context, name, password string) error {
	if err := validatePassword("password", password); err != nil {
		return err
	}
	return s.cfg.Store.SetPassword(ctx, name, hashPassword(password))
}

// DeleteUser removes a user and revokes its tokens.
func (s *Service) DeleteUser(ctx context.Context, name string) error {
	if err := s.cfg.Store.DeleteUser(ctx, name, s.cfg.Now()); err != nil {
		return err
	}
	s.forget(func(p Principal) bool { return p.User == name })
	return nil
}

// Login exchanges a user's password for a token that expires after the login TTL.
func (s *Service) Login(ctx context.Context, name, password string) (string, Token, error) {
	return s.LoginFor(ctx, name, password, "login")
}

// LoginFor is Login with the token's description naming what logged in
// (the OpenStack API's Keystone password method says "openstack").
func (s *Service) LoginFor(ctx context.Context, name, password, description string) (string, Token, error) {
	now := s.cfg.Now()
	// At most 2 x GOMAXPROCS password hashes at once: a login flood costs
	// bounded memory and CPU.
	select {
	case s.hashing <- struct{}{}:
		defer func() { <-s.hashing }()
	default:
		return "", Token{}, errs.Wrapf(errs.RateLimited, "too many logins in progress; retry in a moment")
	}
	if err := s.limiter.allow(name, now); err != nil {
		return "", Token{}, err
	}
	u, hash, err := s.cfg.Store.User(ctx, name)
	if errors.Is(err, ErrUserNotFound) {
		verifyPassword(dummyHash(), password) // same work as for a real user: no timing oracle
		s.limiter.fail(name, now)
		return "", Token{}, ErrBadCredentials
	}
	if err != nil {
		s.limiter.done(name)
		return "", Token{}, err
	}
	if !verifyPassword(hash, password) {
		s.limiter.fail(name, now)
		return "", Token{}, ErrBadCredentials
	}
	s.limiter.succeed(name)
	return s.issue(ctx, u, u.Role, description, s.cfg.LoginTTL)
}

// TokenRequest asks for a new API token.
type TokenRequest struct {
	User        string // "" for the caller; another user needs admin
	Role        Role   // "" for the user's role; else at most the user's role
	Description string
	TTL         time.Duration // 0 for the login TTL
}

// CreateToken issues a token on behalf of caller.
func (s *Service) CreateToken(ctx context.Context, caller Principal, req TokenRequest) (string, Token, error) {
	if req.User == "" {
		req.User = caller.User
	}
	if req.User != caller.User && !caller.Role.Allows(Admin) {
		return "", Token{}, errs.Wrapf(errs.Forbidden, "only an admin may create tokens for another user")
	}
	if req.TTL == 0 {
		req.TTL = s.cfg.LoginTTL
	}
	if req.TTL < time.Minute || req.TTL > s.cfg.MaxTTL {
		return "", Token{}, errs.Field("ttl_s", "must be from 60 to %d seconds", int64(s.cfg.MaxTTL/time.Second))
	}
	if len(req.Description) > 200 {
		return "", Token{}, errs.Field("description", "must be at most 200 characters")
	}
	u, _, err := s.cfg.Store.User(ctx, req.User)
	if err != nil {
		return "", Token{}, err
	}
	role := u.Role
	if req.Role != "" {
		if !req.Role.Valid() {
			return "", Token{}, errs.Field("role", "must be admin, operator or reader")
		}
		if !u.Role.Allows(req.Role) {
			return "", Token{}, errs.Field("role", "%s exceeds user %s's role %s", req.Role, u.Name, u.Role)
		}
		role = req.Role
	}
	// A caller cannot mint a token above their own role (an admin token scoped
	// down to reader cannot create an admin token for itself).
	if req.User == caller.User && !caller.Role.Allows(role) {
		role = caller.Role
	}
	return s.issue(ctx, u, role, req.Description, req.TTL)
}

// issue makes a token for user u, in u's project.
func (s *Service) issue(ctx context.Context, u User, role Role, desc string, ttl time.Duration) (string, Token, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", Token{}, fmt.Errorf("auth: no randomness: %w", err)
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	now := s.cfg.Now()
	id, err := uuid.NewV7()
	if err != nil {
		return "", Token{}, fmt.Errorf("auth: token id: %w", err)
	}
	project := u.Project
	if project == "" {
		project = DefaultProject
	}
	t := Token{ID: id.String(), User: u.Name, Role: role, Project: project, Description: desc, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.cfg.Store.CreateToken(ctx, t, hashSecret(secret)); err != nil {
		return "", Token{}, err
	}
	return secret, t, nil
}

// Authenticate returns the principal a token secret stands for.
func (s *Service) Authenticate(ctx context.Context, secret string) (Principal, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > 100 {
		return Principal{}, ErrBadCredentials
	}
	h := hashSecret(secret)
	now := s.cfg.Now()
	s.mu.Lock()
	c, ok := s.cache[h]
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		switch age := now.Sub(c.checked); {
		case age < cacheTTL:
			return c.p, nil
		case age < 2*cacheTTL:
			// Refresh; not waited for. Its own key: a caller that must
			// wait (below) never takes the answer of a refresh that began
			// before, say, a revocation elsewhere.
			s.lookups.DoChan("refresh/"+h, func() (any, error) { return s.lookup(h) })
			return c.p, nil
		}
	}
	v, err, _ := s.lookups.Do(h, func() (any, error) { return s.lookup(h) })
	if err != nil {
		return Principal{}, err
	}
	return v.(Principal), nil
}

// lookup verifies the token with hash h in the store and caches the
// principal, or forgets it if the token is gone or inactive. Callers
// share it (singleflight): it is not bound to one request's context.
func (s *Service) lookup(h string) (Principal, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	now := s.cfg.Now()
	t, userRole, err := s.cfg.Store.TokenByHash(ctx, h)
	if err == nil && !t.Active(now) {
		err = ErrTokenNotFound
	}
	if errors.Is(err, ErrTokenNotFound) {
		s.mu.Lock()
		delete(s.cache, h)
		s.mu.Unlock()
		return Principal{}, ErrBadCredentials
	}
	if err != nil {
		return Principal{}, err
	}
	role := t.Role
	if !userRole.Allows(role) { // the user was demoted since the token was made
		role = userRole
	}
	p := Principal{User: t.User, Role: role, TokenID: t.ID, Project: t.Project}
	s.mu.Lock()
	if len(s.cache) >= cacheMax {
		clear(s.cache)
	}
	if s.gen == gen { // no revocation since the lookup began
		s.cache[h] = cached{p: p, expires: t.ExpiresAt, checked: now}
	}
	s.mu.Unlock()
	return p, nil
}

// Token returns a token's description; callers other than admins see only
// their own tokens.
func (s *Service) Token(ctx context.Context, caller Principal, id string) (Token, error) {
	t, err := s.cfg.Store.Token(ctx, id)
	if err != nil {
		return Token{}, err
	}
	if t.User != caller.User && !caller.Role.Allows(Admin) {
		return Token{}, ErrTokenNotFound // do not reveal others' token IDs
	}
	return t, nil
}

// Revoke revokes a token. Revoking a revoked token is a no-op.
func (s *Service) Revoke(ctx context.Context, caller Principal, id string) error {
	t, err := s.Token(ctx, caller, id)
	if err != nil {
		return err
	}
	if t.RevokedAt == nil {
		if err := s.cfg.Store.RevokeToken(ctx, id, s.cfg.Now()); err != nil {
			return err
		}
	}
	s.forget(func(p Principal) bool { return p.TokenID == id })
	return nil
}

func (s *Service) forget(match func(Principal) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for h, c := range s.cache {
		if match(c.p) {
			delete(s.cache, h)
		}
	}
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller stored by a guard.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// loginLimiter slows password guessing: after maxFails failures for a user
// name within failWindow, further attempts are refused until lockout passes.
type loginLimiter struct {
	mu    sync.Mutex
	fails map[string]*failures
}

type failures struct {
	n        int // failures in the current window
	inflight int // attempts being checked now: counted as failures until they succeed
	first    time.Time
	until    time.Time
}

const (
	maxFails   = 5
	failWindow = time.Minute
	lockout    = 30 * time.Second
)

// allow admits one attempt for name, counting it as in flight.
func (l *loginLimiter) allow(name string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fails) > 100000 {
		clear(l.fails)
	}
	f := l.fails[name]
	if f == nil {
		f = &failures{first: now}
		l.fails[name] = f
	}
	if now.Before(f.until) {
		return errs.Wrapf(errs.RateLimited, "too many failed logins for %q; retry after %s", name, f.until.Format(time.RFC3339))
	}
	if now.Sub(f.first) > failWindow {
		f.n, f.first = 0, now
	}
	if f.n+f.inflight >= maxFails {
		// Parallel guesses count before their results are known.
		return errs.Wrapf(errs.RateLimited, "too many login attempts for %q at once; retry shortly", name)
	}
	f.inflight++
	return nil
}

// fail records a failed attempt admitted by allow.
func (l *loginLimiter) fail(name string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[name]
	if f == nil {
		return
	}
	f.inflight = max(f.inflight-1, 0)
	f.n++
	if f.n >= maxFails {
		f.until = now.Add(lockout)
		f.n, f.first = 0, now
	}
}

// done ends an attempt that neither failed nor succeeded (an error).
func (l *loginLimiter) done(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.fails[name]; f != nil {
		f.inflight = max(f.inflight-1, 0)
	}
}

func (l *loginLimiter) succeed(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.fails[name]; f != nil {
		f.inflight = max(f.inflight-1, 0)
		if f.inflight == 0 {
			delete(l.fails, name)
		} else {
			f.n = 0
		}
	}
}
