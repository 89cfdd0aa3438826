package authdb_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

func TestConformanceProjects(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		st, err := authdb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		// The admin project exists from the start, and reopening keeps one.
		if p, err := st.Project(ctx, auth.DefaultProject); err != nil || p.Name != "admin" {
			t.Fatalf("Project(admin) on a new store = %+v, %v", p, err)
		}
		if _, err := authdb.Open(ctx, db); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if _, err := st.Project(ctx, "nope"); !errors.Is(err, auth.ErrProjectNotFound) {
			t.Errorf("Project(missing) = %v; want ErrProjectNotFound", err)
		}
		for _, n := range []string{"p2", "p1"} {
			if err := st.CreateProject(ctx, auth.Project{Name: n, Description: "tenant " + n, CreatedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.CreateProject(ctx, auth.Project{Name: "p1", CreatedAt: now}); !errors.Is(err, auth.ErrProjectExists) {
			t.Errorf("CreateProject(duplicate) = %v; want ErrProjectExists", err)
		}
		page, next, err := st.Projects(ctx, rest.ListOptions{Limit: 2})
		if err != nil || len(page) != 2 || page[0].Name != "admin" || page[1].Name != "p1" || next != "p1" {
			t.Errorf("Projects(limit 2) = %+v next %q err %v; want admin, p1", page, next, err)
		}
		page, next, _ = st.Projects(ctx, rest.ListOptions{Limit: 2, After: next})
		if len(page) != 1 || page[0].Name != "p2" || page[0].Description != "tenant p2" || !page[0].CreatedAt.Equal(now) || next != "" {
			t.Errorf("Projects(after p1) = %+v next %q", page, next)
		}
		// Users belong to an existing project; tokens carry it.
		if err := st.CreateUser(ctx, auth.User{Name: "ghost", Role: auth.Reader, Project: "p9", CreatedAt: now}, "h"); !errors.Is(err, auth.ErrProjectNotFound) {
			t.Errorf("CreateUser(unknown project) = %v; want ErrProjectNotFound", err)
		}
		if err := st.CreateUser(ctx, auth.User{Name: "tina", Role: auth.Operator, Project: "p1", CreatedAt: now}, "h"); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateUser(ctx, auth.User{Name: "root", Role: auth.Admin, CreatedAt: now}, "h"); err != nil {
			t.Fatal(err)
		}
		if u, _, _ := st.User(ctx, "tina"); u.Project != "p1" {
			t.Errorf("User(tina).Project = %q; want p1", u.Project)
		}
		if u, _, _ := st.User(ctx, "root"); u.Project != auth.DefaultProject {
			t.Errorf("a user created without a project: Project = %q; want admin", u.Project)
		}
		users, _, _ := st.Users(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"project": "p1"}})
		if len(users) != 1 || users[0].Name != "tina" {
			t.Errorf("Users(project=p1) = %+v; want tina", users)
		}
		tok := auth.Token{ID: "01900000-0000-7000-8000-0000000000a1", User: "tina", Role: auth.Operator, Project: "p1",
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := st.CreateToken(ctx, tok, "hash-a1"); err != nil {
			t.Fatal(err)
		}
		if got, _, err := st.TokenByHash(ctx, "hash-a1"); err != nil || got.Project != "p1" {
			t.Errorf("TokenByHash = %+v, %v; want project p1", got, err)
		}
		// A project with users stays; so does the admin project.
		if err := st.DeleteProject(ctx, "p1"); !errors.Is(err, auth.ErrProjectInUse) {
			t.Errorf("DeleteProject(with users) = %v; want ErrProjectInUse", err)
		}
		if err := st.DeleteProject(ctx, auth.DefaultProject); !errors.Is(err, auth.ErrProjectInUse) {
			t.Errorf("DeleteProject(admin) = %v; want ErrProjectInUse", err)
		}
		if err := st.DeleteProject(ctx, "p9"); !errors.Is(err, auth.ErrProjectNotFound) {
			t.Errorf("DeleteProject(missing) = %v; want ErrProjectNotFound", err)
		}
		if err := st.DeleteUser(ctx, "tina", now); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteProject(ctx, "p1"); err != nil {
			t.Errorf("DeleteProject(empty) = %v", err)
		}
		if _, err := st.Project(ctx, "p1"); !errors.Is(err, auth.ErrProjectNotFound) {
			t.Errorf("Project(deleted) = %v; want ErrProjectNotFound", err)
		}
	})
}

// Rows of a store made before projects existed: the same tables without
// the project columns.
type oldUser struct {
	Name         string `gorm:"primaryKey;size:63"`
	Role         string `gorm:"size:16;not null;index"`
	PasswordHash string `gorm:"not null"`
	CreatedAt    time.Time
}

func (oldUser) TableName() string { return "auth_users" }

type oldToken struct {
	ID          string `gorm:"primaryKey;size:36"`
	SecretHash  string `gorm:"uniqueIndex;size:64;not null"`
	UserName    string `gorm:"index;size:63;not null"`
	Role        string `gorm:"size:16;not null"`
	Description string `gorm:"size:200"`
	CreatedAt   time.Time
	ExpiresAt   time.Time `gorm:"index"`
	RevokedAt   *time.Time
}

func (oldToken) TableName() string { return "auth_tokens" }

// TestConformanceOldStoreMigrates: users and tokens of a store made before
// projects existed belong to the admin project after the upgrade.
func TestConformanceOldStoreMigrates(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		if err := db.AutoMigrate(&oldUser{}, &oldToken{}); err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&oldUser{Name: "ops", Role: "operator", PasswordHash: "h", CreatedAt: now}).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&oldToken{ID: "01900000-0000-7000-8000-0000000000b1", SecretHash: "hash-b1", UserName: "ops",
			Role: "operator", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}).Error; err != nil {
			t.Fatal(err)
		}
		st, err := authdb.Open(ctx, db)
		if err != nil {
			t.Fatalf("Open(old store) = %v", err)
		}
		if u, _, err := st.User(ctx, "ops"); err != nil || u.Project != auth.DefaultProject {
			t.Errorf("old user after migration = %+v, %v; want project admin", u, err)
		}
		if tok, _, err := st.TokenByHash(ctx, "hash-b1"); err != nil || tok.Project != auth.DefaultProject {
			t.Errorf("old token after migration = %+v, %v; want project admin", tok, err)
		}
		if err := st.DeleteProject(ctx, auth.DefaultProject); !errors.Is(err, auth.ErrProjectInUse) {
			t.Errorf("DeleteProject(admin) = %v", err)
		}
		var n int64
		if err := db.Table("auth_users").Where("project = ?", "admin").Count(&n).Error; err != nil || n != 1 {
			t.Errorf("users stored with project admin: %d, %v; want 1", n, err)
		}
	})
}
