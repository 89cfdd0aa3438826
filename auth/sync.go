package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// Central's sync keeps its projects and users at every managed site
// (docs/central.md, "Shared resources") through these routes of the
// site's API, reached only over the site's link with central's relay
// assertion: a user carries its password hash, which Keystone's API
// cannot take. Records central made are marked so; a site's own project
// or user of the same name is never overwritten (409).

// SyncStore is what the sync routes need of a site's store.
type SyncStore interface {
	PutSyncedProject(ctx context.Context, p Project) error
	DeleteSyncedProject(ctx context.Context, name string) error
	SyncedProjects(ctx context.Context) ([]Project, error)
	PutSyncedUser(ctx context.Context, u SyncedUser, now time.Time) error
	DeleteSyncedUser(ctx context.Context, name string, now time.Time) error
	SyncedUsers(ctx context.Context) ([]SyncedUser, error)
}

// SyncedUserView is a synced user as a site lists it: the hash's SHA-256
// instead of the hash.
type SyncedUserView struct {
	Name           string `json:"name"`
	Role           Role   `json:"role"`
	Project        string `json:"project"`
	PasswordSHA256 string `json:"password_sha256"`
}

// HashDigest is the SHA-256 (hex) of a password hash: how central and a
// site compare hashes without showing them.
func HashDigest(h PasswordHash) string {
	sum := sha256.Sum256([]byte(h))
	return hex.EncodeToString(sum[:])
}

// SyncProjectRequest is the body of PUT /v1/sync/projects/{name}.
type SyncProjectRequest struct {
	Description string `json:"description"`
}

// SyncUserRequest is the body of PUT /v1/sync/users/{name}.
type SyncUserRequest struct {
	Role         Role         `json:"role"`
	Project      string       `json:"project"`
	PasswordHash PasswordHash `json:"password_hash"`
}

// RegisterSync adds the sync routes (a site's daemon only). The store must
// be the one the service was configured with.
func (s *Service) RegisterSync(srv *rest.Server, st SyncStore) {
	g := s.requireCentral()
	h := syncHandlers{s: s, st: st}
	srv.Handle("listSyncedProjects", http.MethodGet, "/v1/sync/projects", g, h.listProjects)
	srv.Handle("putSyncedProject", http.MethodPut, "/v1/sync/projects/{name}", g, h.putProject)
	srv.Handle("deleteSyncedProject", http.MethodDelete, "/v1/sync/projects/{name}", g, h.deleteProject)
	srv.Handle("listSyncedUsers", http.MethodGet, "/v1/sync/users", g, h.listUsers)
	srv.Handle("putSyncedUser", http.MethodPut, "/v1/sync/users/{name}", g, h.putUser)
	srv.Handle("deleteSyncedUser", http.MethodDelete, "/v1/sync/users/{name}", g, h.deleteUser)
}

// requireCentral admits only central's relayed calls, as an admin.
func (s *Service) requireCentral() rest.Guard {
	admin := s.Require(Admin)
	return func(r *http.Request) (*http.Request, error) {
		if r.Header.Get(AssertionHeader) == "" {
			return nil, errs.Wrapf(errs.Forbidden, "only central's sync uses these routes (a relayed call over the site's link)")
		}
		return admin(r)
	}
}

type syncHandlers struct {
	s  *Service
	st SyncStore
}

func (h syncHandlers) listProjects(r *http.Request) (int, any, error) {
	ps, err := h.st.SyncedProjects(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[Project]{Items: ps}, nil
}

func (h syncHandlers) putProject(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	var req SyncProjectRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if err := ValidateProjectName("name", name); err != nil {
		return 0, nil, err
	}
	if name == DefaultProject {
		return 0, nil, errs.Field("name", "the admin project is every site's own")
	}
	if len(req.Description) > 200 {
		return 0, nil, errs.Field("description", "must be at most 200 characters")
	}
	p := Project{Name: name, Description: req.Description, CreatedAt: h.s.cfg.Now()}
	if err := h.st.PutSyncedProject(r.Context(), p); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, p, nil
}

func (h syncHandlers) deleteProject(r *http.Request) (int, any, error) {
	if err := h.st.DeleteSyncedProject(r.Context(), rest.Var(r, "name")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (h syncHandlers) listUsers(r *http.Request) (int, any, error) {
	us, err := h.st.SyncedUsers(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := make([]SyncedUserView, len(us))
	for i, u := range us {
		out[i] = SyncedUserView{Name: u.Name, Role: u.Role, Project: u.Project, PasswordSHA256: HashDigest(u.PasswordHash)}
	}
	return http.StatusOK, rest.List[SyncedUserView]{Items: out}, nil
}

func (h syncHandlers) putUser(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	var req SyncUserRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if err := ValidateUserName("name", name); err != nil {
		return 0, nil, err
	}
	if name == BootstrapAdmin {
		return 0, nil, errs.Field("name", "%s is every site's own break-glass account", BootstrapAdmin)
	}
	if !req.Role.Valid() {
		return 0, nil, errs.Field("role", "must be admin, operator or reader")
	}
	if req.Project == "" {
		req.Project = DefaultProject
	}
	if err := ValidateProjectName("project", req.Project); err != nil {
		return 0, nil, err
	}
	if err := ValidPHC(string(req.PasswordHash)); err != nil {
		return 0, nil, err
	}
	u := SyncedUser{Name: name, Role: req.Role, Project: req.Project, PasswordHash: req.PasswordHash}
	if err := h.st.PutSyncedUser(r.Context(), u, h.s.cfg.Now()); err != nil {
		return 0, nil, err
	}
	// Tokens the change revoked must not linger in the cache.
	h.s.forget(func(p Principal) bool { return p.User == name })
	return http.StatusOK, SyncedUserView{Name: u.Name, Role: u.Role, Project: u.Project, PasswordSHA256: HashDigest(u.PasswordHash)}, nil
}

func (h syncHandlers) deleteUser(r *http.Request) (int, any, error) {
	name := rest.Var(r, "name")
	if err := h.st.DeleteSyncedUser(r.Context(), name, h.s.cfg.Now()); err != nil {
		return 0, nil, err
	}
	h.s.forget(func(p Principal) bool { return p.User == name })
	return http.StatusNoContent, nil, nil
}

// ValidPHC checks that h is an argon2id PHC string with sane parameters
// (never echoing it).
func ValidPHC(h string) error {
	bad := errs.Field("password_hash", "must be an argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)")
	parts := strings.Split(h, "$")
	if len(h) > 512 || len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v=19" {
		return bad
	}
	var mem, iters uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &iters, &threads); err != nil ||
		mem < 8*1024 || mem > 1<<20 || iters == 0 || iters > 16 || threads == 0 {
		return bad
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 {
		return bad
	}
	return nil
}
