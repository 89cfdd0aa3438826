package auth_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

// countingStore counts token lookups; while gate is not nil they wait
// for it to close.
type countingStore struct {
	auth.Store
	lookups atomic.Int64
	mu      sync.Mutex
	gate    chan struct{}
}

func (s *countingStore) TokenByHash(ctx context.Context, h string) (auth.Token, auth.Role, error) {
	s.lookups.Add(1)
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		<-g
	}
	return s.Store.TokenByHash(ctx, h)
}

// TestTokenCacheRefreshesInTheBackground: a busy token's cache entry is
// refreshed by one lookup, never by every request at once; past the TTL a
// request is answered from the cache while the refresh runs; a token
// revoked through another service (the other central of a pair) stops
// working within twice the TTL.
func TestTokenCacheRefreshesInTheBackground(t *testing.T) {
	ctx := context.Background()
	db, err := authdb.Open(ctx, sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{Store: db}
	clk := &clock{now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	s, err := auth.New(auth.Config{Store: st, Logger: slog.New(slog.DiscardHandler), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.New(auth.Config{Store: db, Logger: slog.New(slog.DiscardHandler), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, "ops", auth.Operator, "ops-password-1"); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := s.Login(ctx, "ops", "ops-password-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	base := st.lookups.Load()

	// Past the TTL, with the store slow: 50 requests at once are answered
	// from the cache; one lookup runs.
	clk.Add(6 * time.Second)
	st.mu.Lock()
	st.gate = make(chan struct{})
	st.mu.Unlock()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Authenticate(ctx, secret); err != nil {
				failed.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done: // none waited for the store
	case <-time.After(10 * time.Second):
		t.Error("requests past the TTL waited for the store")
	}
	st.mu.Lock()
	close(st.gate)
	st.gate = nil
	st.mu.Unlock()
	<-done
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of 50 requests failed while the entry was refreshed", n)
	}
	for deadline := time.Now().Add(5 * time.Second); st.lookups.Load() == base; {
		if time.Now().After(deadline) {
			t.Fatal("no background refresh")
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
	if n := st.lookups.Load() - base; n != 1 {
		t.Errorf("%d store lookups for 50 requests past the TTL; want 1", n)
	}

	// Revoked through the other service: within 2 × TTL it stops working.
	if err := other.Revoke(ctx, auth.Principal{User: "ops", Role: auth.Admin}, tok.ID); err != nil {
		t.Fatal(err)
	}
	clk.Add(11 * time.Second)
	if _, err := s.Authenticate(ctx, secret); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("Authenticate(revoked elsewhere, 11 s later) = %v; want unauthenticated", err)
	}
}
