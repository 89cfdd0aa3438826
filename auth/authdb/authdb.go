// Package authdb keeps projects, users and tokens in a SQL store (SQLite or
// PostgreSQL through gorm). Its gorm models never leave the package.
package authdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

type projectRow struct {
	Name        string `gorm:"primaryKey;size:64"`
	Description string `gorm:"size:200;not null;default:''"`
	// Origin is "central" for a project central's sync keeps here, else
	// "local" (every row written before sync existed).
	Origin    string `gorm:"size:8;not null;default:'local'"`
	CreatedAt time.Time
}

func (projectRow) TableName() string { return "auth_projects" }

// Users and tokens recorded before projects existed belong to the admin
// project: AutoMigrate adds their project columns with that default.
type userRow struct {
	Name         string `gorm:"primaryKey;size:63"`
	Role         string `gorm:"size:16;not null;index"`
	Project      string `gorm:"size:64;not null;default:'admin';index"`
	PasswordHash string `gorm:"not null"`
	Origin       string `gorm:"size:8;not null;default:'local'"` // as projectRow's
	CreatedAt    time.Time
}

func (userRow) TableName() string { return "auth_users" }

// Origins of a user or project row.
const (
	originLocal   = "local"
	originCentral = "central"
)

type tokenRow struct {
	ID          string `gorm:"primaryKey;size:36"`
	SecretHash  string `gorm:"uniqueIndex;size:64;not null"`
	UserName    string `gorm:"index;size:63;not null"`
	Role        string `gorm:"size:16;not null"`
	Project     string `gorm:"size:64;not null;default:'admin'"`
	Description string `gorm:"size:200"`
	CreatedAt   time.Time
	ExpiresAt   time.Time `gorm:"index"`
	RevokedAt   *time.Time
}

func (tokenRow) TableName() string { return "auth_tokens" }

// Store implements auth.Store.
type Store struct {
	db   *sqldb.DB
	hook ChangeHook
}

// ChangeHook is called inside the transaction of every change to a project
// or user, with the record as central's sync carries it (auth.SyncedUser
// or auth.Project as JSON; nil when deleted). An error rolls the change
// back. Central records the change in its sync store this way, so the
// change and its sync version commit together.
type ChangeHook func(tx *gorm.DB, resource, key string, doc []byte, deleted bool) error

// SetChangeHook installs h; call it before the store is used.
func (s *Store) SetChangeHook(h ChangeHook) { s.hook = h }

// Synced resource names the hook is called with (syncproto's).
const (
	ResourceProjects = "projects"
	ResourceUsers    = "users"
)

func (s *Store) changed(tx *gorm.DB, resource, key string, v any) error {
	if s.hook == nil {
		return nil
	}
	if v == nil {
		return s.hook(tx, resource, key, nil, true)
	}
	doc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.hook(tx, resource, key, doc, false)
}

func (s *Store) userChanged(tx *gorm.DB, r userRow) error {
	return s.changed(tx, ResourceUsers, r.Name, auth.SyncedUser{Name: r.Name, Role: auth.Role(r.Role), Project: orAdmin(r.Project),
		PasswordHash: auth.PasswordHash(r.PasswordHash)})
}

var _ auth.Store = (*Store)(nil)

// Open migrates the schema, makes sure the admin project exists, and
// returns the store.
func Open(ctx context.Context, db *sqldb.DB) (*Store, error) {
	if err := sqldb.Migrate(ctx, db, &projectRow{}, &userRow{}, &tokenRow{}); err != nil {
		return nil, fmt.Errorf("authdb: migrate: %w", err)
	}
	// Written once: a look first, so that opening the store writes
	// nothing (a controller pair opens it on a standby while it takes over).
	var n int64
	if err := db.WithContext(ctx).Model(&projectRow{}).Where("name = ?", auth.DefaultProject).Count(&n).Error; err != nil {
		return nil, fmt.Errorf("authdb: admin project: %w", err)
	}
	if n == 0 {
		admin := projectRow{Name: auth.DefaultProject, Description: "the cloud's administrators", CreatedAt: time.Now().UTC()}
		if err := db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&admin).Error; err != nil {
			return nil, fmt.Errorf("authdb: admin project: %w", err)
		}
	}
	return &Store{db: db}, nil
}

func orAdmin(project string) string {
	if project == "" {
		return auth.DefaultProject
	}
	return project
}

func toProject(r projectRow) auth.Project {
	return auth.Project{Name: r.Name, Description: r.Description, CreatedAt: r.CreatedAt.UTC()}
}

func toUser(r userRow) auth.User {
	return auth.User{Name: r.Name, Role: auth.Role(r.Role), Project: orAdmin(r.Project), CreatedAt: r.CreatedAt.UTC()}
}

func toToken(r tokenRow) auth.Token {
	t := auth.Token{ID: r.ID, User: r.UserName, Role: auth.Role(r.Role), Project: orAdmin(r.Project), Description: r.Description,
		CreatedAt: r.CreatedAt.UTC(), ExpiresAt: r.ExpiresAt.UTC()}
	if r.RevokedAt != nil {
		at := r.RevokedAt.UTC()
		t.RevokedAt = &at
	}
	return t
}

// lockProject reads project name inside tx, locking its row on PostgreSQL
// (SQLite serialises writers): strength SHARE for a user joining it, UPDATE
// for its deletion, so the two never interleave.
func (s *Store) lockProject(tx *gorm.DB, name, strength string) error {
	q := tx
	if s.db.Kind == sqldb.Postgres {
		q = q.Clauses(clause.Locking{Strength: strength})
	}
	var p projectRow
	err := q.Where("name = ?", name).Take(&p).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("%w: %s", auth.ErrProjectNotFound, name)
	}
	return err
}

func (s *Store) CreateProject(ctx context.Context, p auth.Project) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&projectRow{Name: p.Name, Description: p.Description, Origin: originLocal, CreatedAt: p.CreatedAt}).Error; err != nil {
			return err
		}
		return s.changed(tx, ResourceProjects, p.Name, auth.Project{Name: p.Name, Description: p.Description})
	})
	if err != nil && sqldb.IsUniqueViolation(err) {
		return fmt.Errorf("%w: %s", auth.ErrProjectExists, p.Name)
	}
	return err
}

func (s *Store) Project(ctx context.Context, name string) (auth.Project, error) {
	var r projectRow
	err := s.db.WithContext(ctx).Where("name = ?", name).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return auth.Project{}, fmt.Errorf("%w: %s", auth.ErrProjectNotFound, name)
	}
	if err != nil {
		return auth.Project{}, err
	}
	return toProject(r), nil
}

func (s *Store) Projects(ctx context.Context, opts rest.ListOptions) ([]auth.Project, string, error) {
	var rows []projectRow
	if err := sqldb.Page(s.db.WithContext(ctx).Model(&projectRow{}), "name", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r projectRow) string { return r.Name })
	out := make([]auth.Project, len(rows))
	for i, r := range rows {
		out[i] = toProject(r)
	}
	return out, next, nil
}

func (s *Store) DeleteProject(ctx context.Context, name string) error {
	if name == auth.DefaultProject {
		return fmt.Errorf("%w: the admin project cannot be deleted", auth.ErrProjectInUse)
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return s.deleteProject(tx, name) })
}

func (s *Store) deleteProject(tx *gorm.DB, name string) error {
	if err := s.lockProject(tx, name, "UPDATE"); err != nil {
		return err
	}
	var n int64
	if err := tx.Model(&userRow{}).Where("project = ?", name).Count(&n).Error; err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: project %s has %d users; delete them first", auth.ErrProjectInUse, name, n)
	}
	if err := tx.Delete(&projectRow{}, "name = ?", name).Error; err != nil {
		return err
	}
	return s.changed(tx, ResourceProjects, name, nil)
}

func (s *Store) CreateUser(ctx context.Context, u auth.User, hash string) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.lockProject(tx, orAdmin(u.Project), "SHARE"); err != nil {
			return err
		}
		r := userRow{Name: u.Name, Role: string(u.Role), Project: orAdmin(u.Project), PasswordHash: hash, Origin: originLocal, CreatedAt: u.CreatedAt}
		if err := tx.Create(&r).Error; err != nil {
			return err
		}
		return s.userChanged(tx, r)
	})
	if err != nil && sqldb.IsUniqueViolation(err) {
		return fmt.Errorf("%w: %s", auth.ErrUserExists, u.Name)
	}
	return err
}

func (s *Store) User(ctx context.Context, name string) (auth.User, string, error) {
	var r userRow
	err := s.db.WithContext(ctx).Where("name = ?", name).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return auth.User{}, "", fmt.Errorf("%w: %s", auth.ErrUserNotFound, name)
	}
	if err != nil {
		return auth.User{}, "", err
	}
	return toUser(r), r.PasswordHash, nil
}

func (s *Store) Users(ctx context.Context, opts rest.ListOptions) ([]auth.User, string, error) {
	q := s.db.WithContext(ctx).Model(&userRow{})
	if role, ok := opts.Filters["role"]; ok {
		q = q.Where("role = ?", role)
	}
	if project, ok := opts.Filters["project"]; ok {
		q = q.Where("project = ?", project)
	}
	var rows []userRow
	if err := sqldb.Page(q, "name", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r userRow) string { return r.Name })
	out := make([]auth.User, len(rows))
	for i, r := range rows {
		out[i] = toUser(r)
	}
	return out, next, nil
}

func (s *Store) SetPassword(ctx context.Context, name, hash string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&userRow{}).Where("name = ?", name).Update("password_hash", hash)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("%w: %s", auth.ErrUserNotFound, name)
		}
		if s.hook == nil {
			return nil
		}
		var r userRow
		if err := tx.Where("name = ?", name).Take(&r).Error; err != nil {
			return err
		}
		return s.userChanged(tx, r)
	})
}

func (s *Store) DeleteUser(ctx context.Context, name string, now time.Time) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return s.deleteUser(tx, name, now, "") })
}

// deleteUser removes a user (of origin, when not "") and revokes its
// tokens, keeping one admin.
func (s *Store) deleteUser(tx *gorm.DB, name string, now time.Time, origin string) error {
	var r userRow
	err := tx.Where("name = ?", name).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("%w: %s", auth.ErrUserNotFound, name)
	}
	if err != nil {
		return err
	}
	if origin != "" && r.Origin != origin {
		return fmt.Errorf("%w: %s is the site's own user, not central's", auth.ErrUserExists, name)
	}
	if auth.Role(r.Role) == auth.Admin {
		// Lock the admins (PostgreSQL; SQLite serialises writers) so two
		// concurrent deletions cannot both see two admins.
		q := tx
		if s.db.Kind == sqldb.Postgres {
			q = q.Clauses(clause.Locking{Strength: "UPDATE"})
		}
		var admins []userRow
		if err := q.Where("role = ?", string(auth.Admin)).Find(&admins).Error; err != nil {
			return err
		}
		if len(admins) <= 1 {
			return auth.ErrLastAdmin
		}
	}
	if err := s.revokeTokens(tx, name, now); err != nil {
		return err
	}
	if err := tx.Delete(&userRow{}, "name = ?", name).Error; err != nil {
		return err
	}
	return s.changed(tx, ResourceUsers, name, nil)
}

func (s *Store) revokeTokens(tx *gorm.DB, user string, now time.Time) error {
	return tx.Model(&tokenRow{}).Where("user_name = ? AND revoked_at IS NULL", user).Update("revoked_at", now).Error
}

func (s *Store) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&userRow{}).Count(&n).Error
	return n, err
}

func (s *Store) CreateToken(ctx context.Context, t auth.Token, hash string) error {
	return s.db.WithContext(ctx).Create(&tokenRow{ID: t.ID, SecretHash: hash, UserName: t.User, Role: string(t.Role), Project: orAdmin(t.Project),
		Description: t.Description, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}).Error
}

func (s *Store) TokenByHash(ctx context.Context, hash string) (auth.Token, auth.Role, error) {
	var r tokenRow
	err := s.db.WithContext(ctx).Where("secret_hash = ?", hash).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return auth.Token{}, "", auth.ErrTokenNotFound
	}
	if err != nil {
		return auth.Token{}, "", err
	}
	var u userRow
	err = s.db.WithContext(ctx).Where("name = ?", r.UserName).Take(&u).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return auth.Token{}, "", auth.ErrTokenNotFound // user deleted
	}
	if err != nil {
		return auth.Token{}, "", err
	}
	return toToken(r), auth.Role(u.Role), nil
}

func (s *Store) Token(ctx context.Context, id string) (auth.Token, error) {
	var r tokenRow
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return auth.Token{}, fmt.Errorf("%w: %s", auth.ErrTokenNotFound, id)
	}
	if err != nil {
		return auth.Token{}, err
	}
	return toToken(r), nil
}

func (s *Store) Tokens(ctx context.Context, user string, opts rest.ListOptions) ([]auth.Token, string, error) {
	q := s.db.WithContext(ctx).Model(&tokenRow{})
	if user != "" {
		q = q.Where("user_name = ?", user)
	}
	var rows []tokenRow
	if err := sqldb.Page(q, "id", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r tokenRow) string { return r.ID })
	out := make([]auth.Token, len(rows))
	for i, r := range rows {
		out[i] = toToken(r)
	}
	return out, next, nil
}

func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) error {
	res := s.db.WithContext(ctx).Model(&tokenRow{}).Where("id = ? AND revoked_at IS NULL", id).Update("revoked_at", at)
	return res.Error
}

// PutSyncedProject creates or updates a project central's sync keeps here;
// a site's own project of that name is ErrProjectExists, and stays.
func (s *Store) PutSyncedProject(ctx context.Context, p auth.Project) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r projectRow
		err := tx.Where("name = ?", p.Name).Take(&r).Error
		switch {
		case errors.Is(err, gorm.ErrRecordNotFound):
			return tx.Create(&projectRow{Name: p.Name, Description: p.Description, Origin: originCentral, CreatedAt: p.CreatedAt}).Error
		case err != nil:
			return err
		case r.Origin != originCentral:
			return fmt.Errorf("%w: %s is the site's own project", auth.ErrProjectExists, p.Name)
		case r.Description == p.Description:
			return nil
		}
		return tx.Model(&projectRow{}).Where("name = ?", p.Name).Update("description", p.Description).Error
	})
}

// DeleteSyncedProject removes a project central's sync made:
// ErrProjectNotFound if there is none, ErrProjectExists if the site's own
// holds the name, ErrProjectInUse while it has users.
func (s *Store) DeleteSyncedProject(ctx context.Context, name string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r projectRow
		err := tx.Where("name = ?", name).Take(&r).Error
		switch {
		case errors.Is(err, gorm.ErrRecordNotFound):
			return fmt.Errorf("%w: %s", auth.ErrProjectNotFound, name)
		case err != nil:
			return err
		case r.Origin != originCentral:
			return fmt.Errorf("%w: %s is the site's own project", auth.ErrProjectExists, name)
		}
		return s.deleteProject(tx, name)
	})
}

// PutSyncedUser creates or updates a user central's sync keeps here, with
// central's password hash; a change of hash, role or project revokes the
// user's tokens. A site's own user of that name is ErrUserExists, and
// stays; an unknown project is ErrProjectNotFound.
func (s *Store) PutSyncedUser(ctx context.Context, u auth.SyncedUser, now time.Time) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		project := orAdmin(u.Project)
		if err := s.lockProject(tx, project, "SHARE"); err != nil {
			return err
		}
		var r userRow
		err := tx.Where("name = ?", u.Name).Take(&r).Error
		switch {
		case errors.Is(err, gorm.ErrRecordNotFound):
			return tx.Create(&userRow{Name: u.Name, Role: string(u.Role), Project: project, PasswordHash: string(u.PasswordHash),
				Origin: originCentral, CreatedAt: now}).Error
		case err != nil:
			return err
		case r.Origin != originCentral:
			return fmt.Errorf("%w: %s is the site's own user", auth.ErrUserExists, u.Name)
		case r.Role == string(u.Role) && orAdmin(r.Project) == project && r.PasswordHash == string(u.PasswordHash):
			return nil
		}
		if err := tx.Model(&userRow{}).Where("name = ?", u.Name).
			Updates(map[string]any{"role": string(u.Role), "project": project, "password_hash": string(u.PasswordHash)}).Error; err != nil {
			return err
		}
		return s.revokeTokens(tx, u.Name, now)
	})
}

// DeleteSyncedUser removes a user central's sync made and revokes its
// tokens: ErrUserNotFound if there is none, ErrUserExists if the site's
// own holds the name.
func (s *Store) DeleteSyncedUser(ctx context.Context, name string, now time.Time) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return s.deleteUser(tx, name, now, originCentral) })
}

// SyncedProjects lists the projects central's sync made, by name.
func (s *Store) SyncedProjects(ctx context.Context) ([]auth.Project, error) {
	var rows []projectRow
	if err := s.db.WithContext(ctx).Where("origin = ?", originCentral).Order("name").Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]auth.Project, len(rows))
	for i, r := range rows {
		out[i] = toProject(r)
	}
	return out, nil
}

// SyncedUsers lists the users central's sync made, by name, with their
// password hashes.
func (s *Store) SyncedUsers(ctx context.Context) ([]auth.SyncedUser, error) {
	var rows []userRow
	if err := s.db.WithContext(ctx).Where("origin = ?", originCentral).Order("name").Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]auth.SyncedUser, len(rows))
	for i, r := range rows {
		out[i] = auth.SyncedUser{Name: r.Name, Role: auth.Role(r.Role), Project: orAdmin(r.Project), PasswordHash: auth.PasswordHash(r.PasswordHash)}
	}
	return out, nil
}

// LocalRecords returns every project and user of this store's own (what
// central offers to sync), users with their password hashes.
func (s *Store) LocalRecords(ctx context.Context) ([]auth.Project, []auth.SyncedUser, error) {
	var prows []projectRow
	if err := s.db.WithContext(ctx).Where("origin = ?", originLocal).Order("name").Find(&prows).Error; err != nil {
		return nil, nil, err
	}
	var urows []userRow
	if err := s.db.WithContext(ctx).Where("origin = ?", originLocal).Order("name").Find(&urows).Error; err != nil {
		return nil, nil, err
	}
	ps := make([]auth.Project, len(prows))
	for i, r := range prows {
		ps[i] = auth.Project{Name: r.Name, Description: r.Description}
	}
	us := make([]auth.SyncedUser, len(urows))
	for i, r := range urows {
		us[i] = auth.SyncedUser{Name: r.Name, Role: auth.Role(r.Role), Project: orAdmin(r.Project), PasswordHash: auth.PasswordHash(r.PasswordHash)}
	}
	return ps, us, nil
}
