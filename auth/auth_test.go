package auth_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

// clock is a settable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func newService(t *testing.T) (*auth.Service, *clock) {
	t.Helper()
	st, err := authdb.Open(context.Background(), sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	s, err := auth.New(auth.Config{Store: st, Logger: slog.New(slog.DiscardHandler), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		have, need auth.Role
		ok         bool
	}{
		{auth.Admin, auth.Admin, true}, {auth.Admin, auth.Reader, true}, {auth.Operator, auth.Admin, false},
		{auth.Operator, auth.Operator, true}, {auth.Reader, auth.Operator, false}, {"root", auth.Reader, false},
	} {
		if got := tc.have.Allows(tc.need); got != tc.ok {
			t.Errorf("%q.Allows(%q) = %v; want %v", tc.have, tc.need, got, tc.ok)
		}
	}
}

func TestLoginTokenExpires(t *testing.T) {
	s, clk := newService(t)
	ctx := context.Background()
	if _, err := s.CreateUser(ctx, "ops", auth.Operator, "ops-password-1"); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := s.Login(ctx, "ops", "ops-password-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.ExpiresAt.Sub(tok.CreatedAt); got != 12*time.Hour {
		t.Errorf("login token lifetime = %s; want 12h", got)
	}
	if p, err := s.Authenticate(ctx, secret); err != nil || p.User != "ops" || p.Role != auth.Operator {
		t.Fatalf("Authenticate(fresh) = %+v, %v", p, err)
	}
	clk.Add(12*time.Hour + time.Second)
	if _, err := s.Authenticate(ctx, secret); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("Authenticate(expired) = %v; want unauthenticated", err)
	}
}

func TestWrongPasswordAndThrottle(t *testing.T) {
	s, clk := newService(t)
	ctx := context.Background()
	if _, err := s.CreateUser(ctx, "ops", auth.Operator, "ops-password-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Login(ctx, "nobody", "whatever-password"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("Login(unknown user) = %v; want ErrBadCredentials", err)
	}
	for i := range 5 {
		if _, _, err := s.Login(ctx, "ops", "wrong-password"); !errors.Is(err, auth.ErrBadCredentials) {
			t.Fatalf("Login(wrong password) #%d = %v; want ErrBadCredentials", i, err)
		}
	}
	// Locked out, even with the right password.
	if _, _, err := s.Login(ctx, "ops", "ops-password-1"); !errors.Is(err, errs.RateLimited) {
		t.Errorf("Login after 5 failures = %v; want rate limited", err)
	}
	clk.Add(31 * time.Second)
	if _, _, err := s.Login(ctx, "ops", "ops-password-1"); err != nil {
		t.Errorf("Login after the lockout = %v; want ok", err)
	}
}

func TestTokenScopeAndOwnership(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	for name, role := range map[string]auth.Role{"root": auth.Admin, "ops": auth.Operator, "ro": auth.Reader} {
		if _, err := s.CreateUser(ctx, name, role, "a-long-password"); err != nil {
			t.Fatal(err)
		}
	}
	ops := auth.Principal{User: "ops", Role: auth.Operator}
	// An operator cannot mint an admin token, nor one for someone else.
	if _, _, err := s.CreateToken(ctx, ops, auth.TokenRequest{Role: auth.Admin}); !errors.Is(err, errs.Invalid) {
		t.Errorf("operator asks for an admin token: %v; want invalid", err)
	}
	if _, _, err := s.CreateToken(ctx, ops, auth.TokenRequest{User: "ro"}); !errors.Is(err, errs.Forbidden) {
		t.Errorf("operator asks for ro's token: %v; want forbidden", err)
	}
	// A token scoped down to reader authenticates as reader.
	secret, tok, err := s.CreateToken(ctx, ops, auth.TokenRequest{Role: auth.Reader, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Authenticate(ctx, secret); p.Role != auth.Reader {
		t.Errorf("scoped token role = %s; want reader", p.Role)
	}
	// Others cannot see or revoke it; its owner and admins can.
	ro := auth.Principal{User: "ro", Role: auth.Reader}
	if err := s.Revoke(ctx, ro, tok.ID); !errors.Is(err, errs.NotFound) {
		t.Errorf("ro revokes ops's token: %v; want not found", err)
	}
	if err := s.Revoke(ctx, auth.Principal{User: "root", Role: auth.Admin}, tok.ID); err != nil {
		t.Errorf("admin revokes: %v", err)
	}
	if err := s.Revoke(ctx, ops, tok.ID); err != nil {
		t.Errorf("revoking twice: %v; want a no-op", err)
	}
	if _, err := s.Authenticate(ctx, secret); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("revoked token: %v; want unauthenticated", err)
	}
	// TTL bounds.
	for _, ttl := range []time.Duration{time.Second, 400 * 24 * time.Hour} {
		if _, _, err := s.CreateToken(ctx, ops, auth.TokenRequest{TTL: ttl}); !errors.Is(err, errs.Invalid) {
			t.Errorf("TTL %s: %v; want invalid", ttl, err)
		}
	}
}

func TestDeleteUser(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	if _, err := s.CreateUser(ctx, "root", auth.Admin, "a-long-password"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, "root"); !errors.Is(err, auth.ErrLastAdmin) || !errors.Is(err, errs.Conflict) {
		t.Errorf("delete the last admin: %v; want ErrLastAdmin (conflict)", err)
	}
	if _, err := s.CreateUser(ctx, "ops", auth.Operator, "a-long-password"); err != nil {
		t.Fatal(err)
	}
	secret, _, err := s.Login(ctx, "ops", "a-long-password")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, secret); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("deleted user's token: %v; want unauthenticated", err)
	}
	if _, err := s.CreateUser(ctx, "root", auth.Reader, "a-long-password"); !errors.Is(err, auth.ErrUserExists) {
		t.Errorf("duplicate user: %v; want ErrUserExists", err)
	}
}

func TestAuthenticateRejectsJunkCheaply(t *testing.T) {
	s, _ := newService(t)
	for _, junk := range []string{"", "Bearer x", "pt_", "pt_" + strings.Repeat("A", 200)} {
		if _, err := s.Authenticate(context.Background(), junk); !errors.Is(err, errs.Unauthenticated) {
			t.Errorf("Authenticate(%q) = %v; want unauthenticated", junk, err)
		}
	}
}

// TestParallelGuessesAreBounded: concurrent wrong passwords for one user
// count before their results are known: at most 5 are checked.
func TestParallelGuessesAreBounded(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	if _, err := s.CreateUser(ctx, "ops", auth.Operator, "ops-password-1"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	checked := 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Login(ctx, "ops", "wrong-password")
			if errors.Is(err, auth.ErrBadCredentials) {
				mu.Lock()
				checked++
				mu.Unlock()
			} else if !errors.Is(err, errs.RateLimited) {
				t.Errorf("Login = %v", err)
			}
		}()
	}
	wg.Wait()
	if checked > 5 {
		t.Errorf("%d of 20 parallel guesses were checked; want at most 5", checked)
	}
}
