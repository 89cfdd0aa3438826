package authdb_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

func TestConformanceAuthStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, open func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := open(t)
		st, err := authdb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		if _, _, err := st.User(ctx, "nobody"); !errors.Is(err, auth.ErrUserNotFound) {
			t.Errorf("User(missing) = %v; want ErrUserNotFound", err)
		}
		for _, u := range []auth.User{{Name: "root", Role: auth.Admin}, {Name: "ops", Role: auth.Operator}, {Name: "ro", Role: auth.Reader}} {
			u.CreatedAt = now
			if err := st.CreateUser(ctx, u, "hash-"+u.Name); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.CreateUser(ctx, auth.User{Name: "ops", Role: auth.Reader, CreatedAt: now}, "x"); !errors.Is(err, auth.ErrUserExists) {
			t.Errorf("CreateUser(duplicate) = %v; want ErrUserExists", err)
		}
		u, hash, err := st.User(ctx, "ops")
		if err != nil || u.Role != auth.Operator || hash != "hash-ops" || !u.CreatedAt.Equal(now) {
			t.Errorf("User(ops) = %+v %q %v", u, hash, err)
		}
		if n, _ := st.CountUsers(ctx); n != 3 {
			t.Errorf("CountUsers = %d; want 3", n)
		}
		// Paging by name, and filters.
		page, next, err := st.Users(ctx, rest.ListOptions{Limit: 2})
		if err != nil || len(page) != 2 || page[0].Name != "ops" || page[1].Name != "ro" || next != "ro" {
			t.Errorf("Users(limit 2) = %v next %q err %v; want ops, ro, next ro", page, next, err)
		}
		page, next, _ = st.Users(ctx, rest.ListOptions{Limit: 2, After: "ro"})
		if len(page) != 1 || page[0].Name != "root" || next != "" {
			t.Errorf("Users(after ro) = %v next %q; want root and the end", page, next)
		}
		page, _, _ = st.Users(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"role": "reader"}})
		if len(page) != 1 || page[0].Name != "ro" {
			t.Errorf("Users(role=reader) = %v; want ro", page)
		}
		// Tokens.
		tok := auth.Token{ID: "01900000-0000-7000-8000-000000000001", User: "ops", Role: auth.Operator, Description: "ci",
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := st.CreateToken(ctx, tok, "secret-hash-1"); err != nil {
			t.Fatal(err)
		}
		got, role, err := st.TokenByHash(ctx, "secret-hash-1")
		if err != nil || got.ID != tok.ID || role != auth.Operator || !got.ExpiresAt.Equal(tok.ExpiresAt) || got.RevokedAt != nil {
			t.Errorf("TokenByHash = %+v %s %v", got, role, err)
		}
		if _, _, err := st.TokenByHash(ctx, "other"); !errors.Is(err, auth.ErrTokenNotFound) {
			t.Errorf("TokenByHash(unknown) = %v; want ErrTokenNotFound", err)
		}
		if err := st.RevokeToken(ctx, tok.ID, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, _ = st.Token(ctx, tok.ID)
		if got.RevokedAt == nil || !got.RevokedAt.Equal(now.Add(time.Minute)) {
			t.Errorf("revoked token RevokedAt = %v", got.RevokedAt)
		}
		// Deleting a user revokes its tokens in the same transaction; the last admin stays.
		tok2 := tok
		tok2.ID, tok2.User = "01900000-0000-7000-8000-000000000002", "ro"
		if err := st.CreateToken(ctx, tok2, "secret-hash-2"); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteUser(ctx, "ro", now); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Token(ctx, tok2.ID); got.RevokedAt == nil {
			t.Error("DeleteUser left the user's token unrevoked")
		}
		if err := st.DeleteUser(ctx, "root", now); !errors.Is(err, auth.ErrLastAdmin) {
			t.Errorf("DeleteUser(last admin) = %v; want ErrLastAdmin", err)
		}
		if err := st.DeleteUser(ctx, "ghost", now); !errors.Is(err, auth.ErrUserNotFound) {
			t.Errorf("DeleteUser(missing) = %v; want ErrUserNotFound", err)
		}
		toks, _, _ := st.Tokens(ctx, "ops", rest.ListOptions{Limit: 10})
		if len(toks) != 1 || toks[0].ID != tok.ID {
			t.Errorf("Tokens(ops) = %v", toks)
		}
		// Two admins deleted at once: one deletion wins, one admin remains.
		for _, n := range []string{"adm1", "adm2"} {
			if err := st.CreateUser(ctx, auth.User{Name: n, Role: auth.Admin, CreatedAt: now}, "h"); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.DeleteUser(ctx, "root", now); err != nil { // leaves adm1, adm2
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errsGot := make([]error, 2)
		for i, n := range []string{"adm1", "adm2"} {
			wg.Add(1)
			go func() { defer wg.Done(); errsGot[i] = st.DeleteUser(ctx, n, now) }()
		}
		wg.Wait()
		if admins, _, _ := st.Users(ctx, rest.ListOptions{Limit: 10, Filters: map[string]string{"role": "admin"}}); len(admins) != 1 {
			t.Errorf("after deleting two admins at once: %d admins (%v); want exactly 1", len(admins), errsGot)
		}
		// Everything survives reopening the store.
		st2, err := authdb.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := st2.CountUsers(ctx); n != 2 {
			t.Errorf("after reopen: %d users; want 2 (ops and one admin)", n)
		}
	})
}
