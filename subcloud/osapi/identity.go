package osapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// Keystone v3, enough for clients to authenticate and find the site's
// endpoints. There is one domain, Default (ID "default"); users and
// projects are Petrel's, and their Keystone IDs are their names.

const (
	domainID   = "default"
	domainName = "Default"
	// keystoneTime is how Keystone writes token times.
	keystoneTime = "2006-01-02T15:04:05.000000Z"
	// identityVersion is the Keystone API version advertised.
	identityVersion = "v3.14"
)

func (o *api) registerIdentity(srv *rest.Server) {
	d, a := identityDialect, o.auth
	srv.HandleDialect(d, "osIdentityVersions", http.MethodGet, "/identity", nil, o.identityVersions)
	srv.HandleDialect(d, "osIdentityVersionsSlash", http.MethodGet, "/identity/", nil, o.identityVersions)
	srv.HandleDialect(d, "osIdentityV3", http.MethodGet, "/identity/v3", nil, o.identityV3)
	srv.HandleDialect(d, "osIdentityV3Slash", http.MethodGet, "/identity/v3/", nil, o.identityV3)
	srv.HandleDialect(d, "osCreateToken", http.MethodPost, "/identity/v3/auth/tokens", nil, o.createToken)
	srv.HandleDialect(d, "osValidateToken", http.MethodGet, "/identity/v3/auth/tokens", a.Require(auth.Reader), o.validateToken)
	srv.HandleDialect(d, "osCheckToken", http.MethodHead, "/identity/v3/auth/tokens", a.Require(auth.Reader), o.validateToken)
	srv.HandleDialect(d, "osRevokeToken", http.MethodDelete, "/identity/v3/auth/tokens", a.Require(auth.Reader), o.revokeToken)
	srv.HandleDialect(d, "osAuthProjects", http.MethodGet, "/identity/v3/auth/projects", a.Require(auth.Reader), o.authProjects)
	srv.HandleDialect(d, "osListProjects", http.MethodGet, "/identity/v3/projects", a.Require(auth.Reader), o.listProjects)
	srv.HandleDialect(d, "osGetProject", http.MethodGet, "/identity/v3/projects/{id}", a.Require(auth.Reader), o.getProject)
	srv.HandleDialect(d, "osGetUser", http.MethodGet, "/identity/v3/users/{id}", a.Require(auth.Reader), o.getUser)
	srv.HandleDialect(d, "osUserProjects", http.MethodGet, "/identity/v3/users/{id}/projects", a.Require(auth.Reader), o.userProjects)
	srv.HandleDialect(d, "osListDomains", http.MethodGet, "/identity/v3/domains", a.Require(auth.Reader), o.listDomains)
	srv.HandleDialect(d, "osGetDomain", http.MethodGet, "/identity/v3/domains/{id}", a.Require(auth.Reader), o.getDomain)
}

// Link is an OpenStack link.
type Link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
	Type string `json:"type,omitempty"`
}

// MediaType is an entry of a version document's media types.
type MediaType struct {
	Base string `json:"base"`
	Type string `json:"type"`
}

// IdentityVersion describes Keystone v3.
type IdentityVersion struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Updated    string      `json:"updated"`
	Links      []Link      `json:"links"`
	MediaTypes []MediaType `json:"media-types"`
}

func identityVersionOf(r *http.Request) IdentityVersion {
	return IdentityVersion{ID: identityVersion, Status: "stable", Updated: "2020-04-07T00:00:00Z",
		Links:      []Link{{Rel: "self", Href: baseURL(r) + "/identity/v3/"}},
		MediaTypes: []MediaType{{Base: "application/json", Type: "application/vnd.openstack.identity-v3+json"}}}
}

// identityVersions is Keystone's root: the one version it offers, as a
// 300 Multiple Choices like Keystone's own.
func (o *api) identityVersions(r *http.Request) (int, any, error) {
	type values struct {
		Values []IdentityVersion `json:"values"`
	}
	return http.StatusMultipleChoices, map[string]values{"versions": {Values: []IdentityVersion{identityVersionOf(r)}}}, nil
}

func (o *api) identityV3(r *http.Request) (int, any, error) {
	return http.StatusOK, map[string]IdentityVersion{"version": identityVersionOf(r)}, nil
}

// AuthRequest is the body of POST /identity/v3/auth/tokens.
type AuthRequest struct {
	Auth struct {
		Identity struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User UserRef `json:"user"`
			} `json:"password,omitempty"`
			Token *struct {
				ID string `json:"id"`
			} `json:"token,omitempty"`
		} `json:"identity"`
		// Scope is an object (project, domain or system) or "unscoped".
		Scope json.RawMessage `json:"scope,omitempty"`
	} `json:"auth"`
}

// UserRef names a user by ID or by name and domain.
type UserRef struct {
	ID       string     `json:"id,omitempty"`
	Name     string     `json:"name,omitempty"`
	Password string     `json:"password,omitempty"`
	Domain   *DomainRef `json:"domain,omitempty"`
}

// DomainRef names a domain by ID or name.
type DomainRef struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// ProjectRef names a project by ID, or by name and domain.
type ProjectRef struct {
	ID     string     `json:"id,omitempty"`
	Name   string     `json:"name,omitempty"`
	Domain *DomainRef `json:"domain,omitempty"`
}

// scope is what a token request asks to be scoped to.
type scope struct {
	Project *ProjectRef     `json:"project"`
	Domain  json.RawMessage `json:"domain"`
	System  json.RawMessage `json:"system"`
}

// errNoAccess is Keystone's answer to a scope the user has no role on.
func errNoAccess(format string, args ...any) error {
	return errs.Wrapf(errs.Unauthenticated, format, args...)
}

// checkDomain accepts the one domain, by ID or name (or unnamed).
func checkDomain(d *DomainRef) error {
	if d == nil || (d.ID == "" && d.Name == "") || d.ID == domainID || d.Name == domainName {
		return nil
	}
	return errNoAccess("unknown domain; this cloud has one, %s (id %s)", domainName, domainID)
}

// scopedProject returns the project a request scopes to ("" for its
// user's own). A user belongs to one project and may scope only to it;
// domain and system scopes are not offered.
func scopedProject(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `"unscoped"` {
		return "", nil
	}
	var sc scope
	if err := json.Unmarshal(raw, &sc); err != nil {
		return "", errs.Wrapf(errs.Invalid, "malformed scope: %v", err)
	}
	switch {
	case sc.Project != nil:
		if sc.Project.ID != "" {
			return sc.Project.ID, nil
		}
		if sc.Project.Name == "" {
			return "", errs.Wrapf(errs.Invalid, "a project scope needs an id, or a name and a domain")
		}
		if err := checkDomain(sc.Project.Domain); err != nil {
			return "", err
		}
		return sc.Project.Name, nil
	case len(sc.Domain) > 0 || len(sc.System) > 0:
		return "", errNoAccess("only project scope is offered: name the project")
	}
	return "", nil
}

// createToken authenticates with a password or a token and answers with
// a Petrel token (X-Subject-Token) scoped to the user's project. A token
// authenticates as itself: the same secret comes back.
func (o *api) createToken(r *http.Request) (int, any, error) {
	ctx := r.Context()
	var req AuthRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	id := req.Auth.Identity
	if len(id.Methods) != 1 {
		return 0, nil, errNoAccess("give exactly one authentication method: password or token")
	}
	want, err := scopedProject(req.Auth.Scope)
	if err != nil {
		return 0, nil, err
	}
	var secret string
	var p auth.Principal
	switch method := id.Methods[0]; {
	case method == "password" && id.Password != nil:
		u := id.Password.User
		name := u.Name
		if name == "" {
			name = u.ID // a user's ID is its name
		}
		rest.Annotate(ctx, "user", name)
		if err := checkDomain(u.Domain); err != nil {
			return 0, nil, err
		}
		if name == "" || u.Password == "" {
			return 0, nil, errNoAccess("the password method needs a user (name or id) and a password")
		}
		var t auth.Token
		if secret, t, err = o.auth.LoginFor(ctx, name, u.Password, "openstack"); err != nil {
			return 0, nil, err
		}
		p = auth.Principal{User: t.User, Role: t.Role, TokenID: t.ID, Project: t.Project}
	case method == "token" && id.Token != nil:
		secret = id.Token.ID
		if p, err = o.auth.Authenticate(ctx, secret); err != nil {
			return 0, nil, err
		}
		rest.Annotate(ctx, "user", p.User)
	default:
		return 0, nil, errNoAccess("unsupported authentication method %q: use password or token", id.Methods[0])
	}
	rest.Annotate(ctx, "role", string(p.Role))
	if want != "" && want != p.ProjectName() {
		if id.Methods[0] == "password" { // the token just made is of no use
			_ = o.auth.Revoke(context.WithoutCancel(ctx), p, p.TokenID)
		}
		return 0, nil, errNoAccess("user %s has no role on project %s (its project is %s)", p.User, want, p.ProjectName())
	}
	body, err := o.tokenBody(r, p, id.Methods, r.URL.Query().Has("nocatalog"))
	if err != nil {
		return 0, nil, err
	}
	rest.SetHeader(ctx, "X-Subject-Token", secret)
	return http.StatusCreated, body, nil
}

// TokenBody is Keystone's token document.
type TokenBody struct {
	Token TokenInfo `json:"token"`
}

// TokenInfo describes a token.
type TokenInfo struct {
	Methods   []string       `json:"methods"`
	User      TokenUser      `json:"user"`
	AuditIDs  []string       `json:"audit_ids"`
	ExpiresAt string         `json:"expires_at"`
	IssuedAt  string         `json:"issued_at"`
	Project   *ProjectOf     `json:"project,omitempty"`
	IsDomain  bool           `json:"is_domain"`
	Roles     []RoleRef      `json:"roles"`
	Catalog   []CatalogEntry `json:"catalog,omitempty"`
}

// TokenUser is a token's user.
type TokenUser struct {
	ID                string     `json:"id"`
	Name              string     `json:"name"`
	Domain            DomainRef  `json:"domain"`
	PasswordExpiresAt *time.Time `json:"password_expires_at"`
}

// ProjectOf is a token's project.
type ProjectOf struct {
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Domain DomainRef `json:"domain"`
}

// RoleRef is a Keystone role.
type RoleRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// keystoneRoles maps a Petrel role to Keystone's default roles, each
// implying the next: admin > member > reader.
func keystoneRoles(r auth.Role) []RoleRef {
	var names []string
	switch r {
	case auth.Admin:
		names = []string{"admin", "member", "reader"}
	case auth.Operator:
		names = []string{"member", "reader"}
	default:
		names = []string{"reader"}
	}
	out := make([]RoleRef, len(names))
	for i, n := range names {
		out[i] = RoleRef{ID: n, Name: n}
	}
	return out
}

// CatalogEntry is a service of the catalog.
type CatalogEntry struct {
	ID        string     `json:"id"`
	Type      string     `json:"type"`
	Name      string     `json:"name"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is where a service answers.
type Endpoint struct {
	ID        string `json:"id"`
	Interface string `json:"interface"`
	Region    string `json:"region"`
	RegionID  string `json:"region_id"`
	URL       string `json:"url"`
}

// catalog lists the site's services at the address the client used.
func (o *api) catalog(r *http.Request) []CatalogEntry {
	base := baseURL(r)
	entry := func(typ, name, url string) CatalogEntry {
		e := CatalogEntry{ID: typ, Type: typ, Name: name}
		for _, iface := range []string{"public", "internal", "admin"} {
			e.Endpoints = append(e.Endpoints, Endpoint{ID: typ + "-" + iface, Interface: iface, Region: o.d.Region,
				RegionID: o.d.Region, URL: url})
		}
		return e
	}
	return []CatalogEntry{
		entry("identity", "keystone", base+"/identity/v3"),
		entry("compute", "nova", base+"/compute/v2.1"),
		entry("image", "glance", base+"/image"),
		entry("network", "neutron", base+"/network"),
	}
}

// tokenBody describes p's token.
func (o *api) tokenBody(r *http.Request, p auth.Principal, methods []string, noCatalog bool) (TokenBody, error) {
	t, err := o.auth.Token(r.Context(), p, p.TokenID)
	if err != nil {
		return TokenBody{}, err
	}
	project := p.ProjectName()
	info := TokenInfo{
		Methods:   methods,
		User:      TokenUser{ID: t.User, Name: t.User, Domain: DomainRef{ID: domainID, Name: domainName}},
		AuditIDs:  []string{t.ID},
		ExpiresAt: t.ExpiresAt.UTC().Format(keystoneTime),
		IssuedAt:  t.CreatedAt.UTC().Format(keystoneTime),
		Project:   &ProjectOf{ID: project, Name: project, Domain: DomainRef{ID: domainID, Name: domainName}},
		Roles:     keystoneRoles(p.Role),
	}
	if !noCatalog {
		info.Catalog = o.catalog(r)
	}
	return TokenBody{Token: info}, nil
}

// subject authenticates the token named by X-Subject-Token; only its
// owner and admins may ask about it. An unknown token is not found.
func (o *api) subject(r *http.Request) (auth.Principal, error) {
	c := caller(r.Context())
	secret := r.Header.Get("X-Subject-Token")
	if secret == "" {
		return auth.Principal{}, errs.Wrapf(errs.Invalid, "X-Subject-Token is required")
	}
	p, err := o.auth.Authenticate(r.Context(), secret)
	if errors.Is(err, errs.Unauthenticated) {
		return auth.Principal{}, errs.Wrapf(errs.NotFound, "could not find the token")
	}
	if err != nil {
		return auth.Principal{}, err
	}
	if p.User != c.User && !isAdmin(c) {
		return auth.Principal{}, errs.Wrapf(errs.Forbidden, "only its owner or an admin may inspect a token")
	}
	return p, nil
}

// validateToken describes the token in X-Subject-Token (GET and HEAD).
func (o *api) validateToken(r *http.Request) (int, any, error) {
	p, err := o.subject(r)
	if err != nil {
		return 0, nil, err
	}
	body, err := o.tokenBody(r, p, []string{"password"}, r.URL.Query().Has("nocatalog"))
	if err != nil {
		return 0, nil, err
	}
	rest.SetHeader(r.Context(), "X-Subject-Token", r.Header.Get("X-Subject-Token"))
	return http.StatusOK, body, nil
}

// revokeToken revokes the token in X-Subject-Token.
func (o *api) revokeToken(r *http.Request) (int, any, error) {
	p, err := o.subject(r)
	if err != nil {
		return 0, nil, err
	}
	if err := o.auth.Revoke(r.Context(), caller(r.Context()), p.TokenID); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// ProjectBody is a Keystone project.
type ProjectBody struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	DomainID    string            `json:"domain_id"`
	ParentID    string            `json:"parent_id"`
	Description string            `json:"description"`
	Enabled     bool              `json:"enabled"`
	IsDomain    bool              `json:"is_domain"`
	Tags        []string          `json:"tags"`
	Options     map[string]string `json:"options"`
	Links       map[string]string `json:"links"`
}

func projectBody(r *http.Request, p auth.Project) ProjectBody {
	return ProjectBody{ID: p.Name, Name: p.Name, DomainID: domainID, ParentID: domainID, Description: p.Description,
		Enabled: true, Tags: []string{}, Options: map[string]string{},
		Links: map[string]string{"self": baseURL(r) + "/identity/v3/projects/" + p.Name}}
}

// ProjectList is Keystone's list of projects.
type ProjectList struct {
	Projects []ProjectBody `json:"projects"`
	Links    ListLinks     `json:"links"`
}

// ListLinks are the links of a Keystone list.
type ListLinks struct {
	Self     string  `json:"self"`
	Previous *string `json:"previous"`
	Next     *string `json:"next"`
}

// projectsOf lists the projects p may see: all for admins, else its own.
func (o *api) projectsOf(ctx context.Context, p auth.Principal) ([]auth.Project, error) {
	if !isAdmin(p) {
		pr, err := o.auth.Project(ctx, p.ProjectName())
		if err != nil {
			return nil, err
		}
		return []auth.Project{pr}, nil
	}
	var out []auth.Project
	opts := rest.ListOptions{Limit: rest.MaxLimit}
	for {
		items, next, err := o.auth.Projects(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" {
			return out, nil
		}
		opts.After = next
	}
}

func (o *api) projectList(r *http.Request, ps []auth.Project) ProjectList {
	out := ProjectList{Projects: []ProjectBody{}, Links: ListLinks{Self: baseURL(r) + r.URL.Path}}
	name := r.URL.Query().Get("name")
	for _, p := range ps {
		if name == "" || p.Name == name {
			out.Projects = append(out.Projects, projectBody(r, p))
		}
	}
	return out
}

// listProjects lists every project to admins, and callers' own to others.
func (o *api) listProjects(r *http.Request) (int, any, error) {
	ps, err := o.projectsOf(r.Context(), caller(r.Context()))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, o.projectList(r, ps), nil
}

// authProjects lists the projects the caller may scope to: its own.
func (o *api) authProjects(r *http.Request) (int, any, error) {
	pr, err := o.auth.Project(r.Context(), caller(r.Context()).ProjectName())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, o.projectList(r, []auth.Project{pr}), nil
}

func (o *api) getProject(r *http.Request) (int, any, error) {
	c, id := caller(r.Context()), rest.Var(r, "id")
	if id != c.ProjectName() && !isAdmin(c) {
		return 0, nil, fmt.Errorf("%w: %s", auth.ErrProjectNotFound, id) // others' projects are not revealed
	}
	pr, err := o.auth.Project(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]ProjectBody{"project": projectBody(r, pr)}, nil
}

// UserBody is a Keystone user.
type UserBody struct {
	ID                string            `json:"id"`
	Name              string            `json:"name"`
	DomainID          string            `json:"domain_id"`
	DefaultProjectID  string            `json:"default_project_id"`
	Enabled           bool              `json:"enabled"`
	PasswordExpiresAt *time.Time        `json:"password_expires_at"`
	Options           map[string]string `json:"options"`
	Links             map[string]string `json:"links"`
}

// user finds a user the caller may see: itself, or any for admins.
func (o *api) user(r *http.Request) (auth.User, error) {
	c, id := caller(r.Context()), rest.Var(r, "id")
	if id != c.User && !isAdmin(c) {
		return auth.User{}, errs.Wrapf(errs.Forbidden, "only an admin may look at other users")
	}
	return o.auth.User(r.Context(), id)
}

func (o *api) getUser(r *http.Request) (int, any, error) {
	u, err := o.user(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]UserBody{"user": {ID: u.Name, Name: u.Name, DomainID: domainID,
		DefaultProjectID: u.Project, Enabled: true, Options: map[string]string{},
		Links: map[string]string{"self": baseURL(r) + "/identity/v3/users/" + u.Name}}}, nil
}

func (o *api) userProjects(r *http.Request) (int, any, error) {
	u, err := o.user(r)
	if err != nil {
		return 0, nil, err
	}
	pr, err := o.auth.Project(r.Context(), u.Project)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, o.projectList(r, []auth.Project{pr}), nil
}

// DomainBody is the one Keystone domain.
type DomainBody struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Enabled     bool              `json:"enabled"`
	Tags        []string          `json:"tags"`
	Options     map[string]string `json:"options"`
	Links       map[string]string `json:"links"`
}

func domainBody(r *http.Request) DomainBody {
	return DomainBody{ID: domainID, Name: domainName, Description: "the cloud's only domain", Enabled: true,
		Tags: []string{}, Options: map[string]string{},
		Links: map[string]string{"self": baseURL(r) + "/identity/v3/domains/" + domainID}}
}

func (o *api) listDomains(r *http.Request) (int, any, error) {
	type list struct {
		Domains []DomainBody `json:"domains"`
		Links   ListLinks    `json:"links"`
	}
	return http.StatusOK, list{Domains: []DomainBody{domainBody(r)}, Links: ListLinks{Self: baseURL(r) + r.URL.Path}}, nil
}

func (o *api) getDomain(r *http.Request) (int, any, error) {
	if id := rest.Var(r, "id"); id != domainID && id != domainName {
		return 0, nil, errs.Wrapf(errs.NotFound, "could not find domain: %s", id)
	}
	return http.StatusOK, map[string]DomainBody{"domain": domainBody(r)}, nil
}
