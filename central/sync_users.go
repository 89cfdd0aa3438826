package central

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// Central's projects and users reach every managed site with their
// password hashes, so a site checks its operators' logins by itself, also
// while central is away. Keystone's API cannot take a hash, so these go
// through the site's own sync routes (auth/sync.go) over the relay.
// Central's bootstrap admin and the admin project are every site's own and
// never synced. Changes are recorded by a hook inside the change's own
// transaction (authdb.ChangeHook); reconcileAuth covers what existed before.

// userSite is what the project and user syncers need of a site.
type userSite interface {
	SyncedProjects(ctx context.Context) ([]auth.Project, error)
	PutProject(ctx context.Context, p auth.Project) error
	DeleteProject(ctx context.Context, name string) error
	SyncedUsers(ctx context.Context) ([]auth.SyncedUserView, error)
	PutUser(ctx context.Context, u auth.SyncedUser) error
	DeleteUser(ctx context.Context, name string) error
}

// authSynced reports whether central syncs a project or user record.
func authSynced(resource, key string) bool {
	switch resource {
	case syncproto.Users:
		return key != auth.BootstrapAdmin
	case syncproto.Projects:
		return key != auth.DefaultProject
	}
	return false
}

// authHook records central's project and user changes in the sync store
// inside their transactions.
func authHook(store *SyncStore, wake func()) authdb.ChangeHook {
	return func(tx *gorm.DB, resource, key string, doc []byte, deleted bool) error {
		if !authSynced(resource, key) {
			return nil
		}
		if err := store.ChangeHook(tx, resource, key, doc, deleted); err != nil {
			return err
		}
		wake()
		return nil
	}
}

// reconcileAuth brings the sync store's projects and users to what
// central's auth store holds (records made before the hook existed, or
// with it off).
func reconcileAuth(ctx context.Context, store *SyncStore, as *authdb.Store) error {
	projects, users, err := as.LocalRecords(ctx)
	if err != nil {
		return err
	}
	want := map[string]map[string][]byte{syncproto.Projects: {}, syncproto.Users: {}}
	for _, p := range projects {
		doc, err := json.Marshal(auth.Project{Name: p.Name, Description: p.Description})
		if err != nil {
			return err
		}
		want[syncproto.Projects][p.Name] = doc
	}
	for _, u := range users {
		doc, err := json.Marshal(u)
		if err != nil {
			return err
		}
		want[syncproto.Users][u.Name] = doc
	}
	for resource, docs := range want {
		recs, _, err := store.Since(ctx, resource, 0, 0)
		if err != nil {
			return err
		}
		have := map[string]SyncRecord{}
		for _, r := range recs {
			if !r.Deleted {
				have[r.Key] = r
			}
		}
		for key, doc := range docs {
			if !authSynced(resource, key) {
				continue
			}
			_, sum, err := syncproto.Content(doc)
			if err != nil {
				return err
			}
			if r, ok := have[key]; ok && r.Content == sum.String() {
				continue
			}
			if _, err := store.Put(ctx, resource, key, doc); err != nil {
				return err
			}
		}
		for key := range have {
			if _, ok := docs[key]; !ok {
				if _, err := store.Delete(ctx, resource, key); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// siteCall maps a site's refusal: 409 and 400 (a record the site will not
// take as it is) to errSyncConflict with the site's reason; 404 to
// errNotThere; the rest stays transient.
var errNotThere = errors.New("not at the site")

// petrel calls the site's own API through the relay.
func (s *relaySite) petrel(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+relayHost(s.name)+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.r.client.Do(req)
	if err != nil {
		return fmt.Errorf("site %s: %w", s.name, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("site %s: %w", s.name, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %s %s", errNotThere, method, path)
	case resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusBadRequest:
		var e struct{ Error struct{ Message string } }
		_ = json.Unmarshal(raw, &e)
		return fmt.Errorf("%w: site %s: %s", errSyncConflict, s.name, e.Error.Message)
	case resp.StatusCode >= 300:
		return fmt.Errorf("site %s: %s %s: %s", s.name, method, path, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("site %s: %s %s: %w", s.name, method, path, err)
		}
	}
	return nil
}

func (s *relaySite) SyncedProjects(ctx context.Context) ([]auth.Project, error) {
	var l struct{ Items []auth.Project }
	err := s.petrel(ctx, http.MethodGet, "/v1/sync/projects", nil, &l)
	return l.Items, err
}

func (s *relaySite) PutProject(ctx context.Context, p auth.Project) error {
	return s.petrel(ctx, http.MethodPut, "/v1/sync/projects/"+url.PathEscape(p.Name), auth.SyncProjectRequest{Description: p.Description}, nil)
}

func (s *relaySite) DeleteProject(ctx context.Context, name string) error {
	return s.petrel(ctx, http.MethodDelete, "/v1/sync/projects/"+url.PathEscape(name), nil, nil)
}

func (s *relaySite) SyncedUsers(ctx context.Context) ([]auth.SyncedUserView, error) {
	var l struct{ Items []auth.SyncedUserView }
	err := s.petrel(ctx, http.MethodGet, "/v1/sync/users", nil, &l)
	return l.Items, err
}

func (s *relaySite) PutUser(ctx context.Context, u auth.SyncedUser) error {
	return s.petrel(ctx, http.MethodPut, "/v1/sync/users/"+url.PathEscape(u.Name),
		auth.SyncUserRequest{Role: u.Role, Project: u.Project, PasswordHash: u.PasswordHash}, nil)
}

func (s *relaySite) DeleteUser(ctx context.Context, name string) error {
	return s.petrel(ctx, http.MethodDelete, "/v1/sync/users/"+url.PathEscape(name), nil, nil)
}

// projectSyncer keeps central's projects at a site.
type projectSyncer struct{}

func (projectSyncer) resource() string { return syncproto.Projects }

func (projectSyncer) apply(ctx context.Context, s syncSite, rec SyncRecord) error {
	if rec.Deleted {
		if err := s.DeleteProject(ctx, rec.Key); err != nil && !errors.Is(err, errNotThere) {
			return err
		}
		return nil
	}
	var p auth.Project
	if err := json.Unmarshal(rec.Doc, &p); err != nil {
		return fmt.Errorf("project record %s: %w", rec.Key, err)
	}
	return s.PutProject(ctx, p)
}

func (projectSyncer) audit(ctx context.Context, s syncSite, desired []SyncRecord) ([]SyncRecord, error) {
	have, err := s.SyncedProjects(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string]auth.Project{}
	for _, p := range have {
		held[p.Name] = p
	}
	var repairs []SyncRecord
	for _, rec := range desired {
		p, ok := held[rec.Key]
		if rec.Deleted {
			if ok {
				repairs = append(repairs, rec)
			}
			continue
		}
		var want auth.Project
		if err := json.Unmarshal(rec.Doc, &want); err != nil {
			return nil, fmt.Errorf("project record %s: %w", rec.Key, err)
		}
		if !ok || p.Description != want.Description {
			repairs = append(repairs, rec)
		}
	}
	return repairs, nil
}

// userSyncer keeps central's users at a site.
type userSyncer struct{}

func (userSyncer) resource() string { return syncproto.Users }

func (userSyncer) apply(ctx context.Context, s syncSite, rec SyncRecord) error {
	if rec.Deleted {
		if err := s.DeleteUser(ctx, rec.Key); err != nil && !errors.Is(err, errNotThere) {
			return err
		}
		return nil
	}
	var u auth.SyncedUser
	if err := json.Unmarshal(rec.Doc, &u); err != nil {
		return fmt.Errorf("user record %s: %w", rec.Key, err)
	}
	return s.PutUser(ctx, u)
}

func (userSyncer) audit(ctx context.Context, s syncSite, desired []SyncRecord) ([]SyncRecord, error) {
	have, err := s.SyncedUsers(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string]auth.SyncedUserView{}
	for _, u := range have {
		held[u.Name] = u
	}
	var repairs []SyncRecord
	for _, rec := range desired {
		h, ok := held[rec.Key]
		if rec.Deleted {
			if ok {
				repairs = append(repairs, rec)
			}
			continue
		}
		var want auth.SyncedUser
		if err := json.Unmarshal(rec.Doc, &want); err != nil {
			return nil, fmt.Errorf("user record %s: %w", rec.Key, err)
		}
		if !ok || h.Role != want.Role || h.Project != want.Project || h.PasswordSHA256 != auth.HashDigest(want.PasswordHash) {
			repairs = append(repairs, rec)
		}
	}
	return repairs, nil
}
