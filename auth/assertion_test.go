package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
)

func TestAssertionLifecycle(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	keyFile := filepath.Join(t.TempDir(), "relay.key")
	signer, pub, err := auth.LoadOrCreateSigningKey(keyFile) // a different key than the one below
	if err != nil {
		t.Fatal(err)
	}
	if _, pubAgain, _ := auth.LoadOrCreateSigningKey(keyFile); !pubAgain.Equal(pub) {
		t.Error("LoadOrCreateSigningKey made a new key on the second call")
	}
	pub2, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := auth.NewAssertionSigner(priv, clk.Now)
	v := auth.NewAssertionVerifier(pub2, "site-sx", clk.Now)
	ops := auth.Principal{User: "olga", Role: auth.Operator}

	tok, err := s.Sign(ops, "site-sx", "req-1", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(tok)
	if err != nil || p.User != "central:olga" || p.Role != auth.Operator {
		t.Fatalf("Verify = %+v, %v; want central:olga operator", p, err)
	}
	if _, err := v.Verify(tok); !errors.Is(err, auth.ErrAssertionReplay) {
		t.Errorf("second Verify = %v; want replay", err)
	}
	other, _ := s.Sign(ops, "site-dx", "req-2", 0)
	if _, err := v.Verify(other); !errors.Is(err, auth.ErrAssertionSite) {
		t.Errorf("assertion for another site: %v", err)
	}
	late, _ := s.Sign(ops, "site-sx", "req-3", 10*time.Second)
	clk.Add(11 * time.Second)
	if _, err := v.Verify(late); !errors.Is(err, auth.ErrAssertionExpired) || !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("expired assertion: %v", err)
	}
	// Tampering with the payload, or another key's signature, fails.
	fresh, _ := s.Sign(ops, "site-sx", "req-4", 0)
	payload, sig, _ := strings.Cut(fresh, ".")
	tampered := payload[:len(payload)-2] + "xx." + sig
	if _, err := v.Verify(tampered); !errors.Is(err, auth.ErrAssertionInvalid) {
		t.Errorf("tampered assertion: %v", err)
	}
	foreign, _ := signer.Sign(ops, "site-sx", "req-5", 0)
	if _, err := v.Verify(foreign); !errors.Is(err, auth.ErrAssertionInvalid) {
		t.Errorf("assertion signed by another key: %v", err)
	}
	for _, junk := range []string{"", "a.b", "nodot", strings.Repeat("x", 5000)} {
		if _, err := v.Verify(junk); !errors.Is(err, auth.ErrAssertionInvalid) {
			t.Errorf("Verify(%q) = %v", junk[:min(len(junk), 10)], err)
		}
	}
	// TTL is capped at 60 s.
	long, _ := s.Sign(ops, "site-sx", "req-6", time.Hour)
	clk.Add(61 * time.Second)
	if _, err := v.Verify(long); !errors.Is(err, auth.ErrAssertionExpired) {
		t.Errorf("an hour-long assertion after 61 s: %v; want expired (capped at 60 s)", err)
	}
}

func TestGuardAcceptsAssertionsOnlyWhenConfigured(t *testing.T) {
	svc, clk := newService(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer := auth.NewAssertionSigner(priv, clk.Now)
	guard := func(need auth.Role, header, value string) error {
		r := httptest.NewRequest(http.MethodPost, "/v1/x", nil)
		if header != "" {
			r.Header.Set(header, value)
		}
		_, err := svc.Require(need)(r)
		return err
	}
	reader, _ := signer.Sign(auth.Principal{User: "rita", Role: auth.Reader}, "site-sx", "r1", 0)
	if err := guard(auth.Reader, auth.AssertionHeader, reader); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("assertion at a daemon that does not accept them: %v", err)
	}
	svc.AcceptAssertions(auth.NewAssertionVerifier(pub, "site-sx", clk.Now))
	if err := guard(auth.Reader, auth.AssertionHeader, reader); err != nil {
		t.Errorf("reader assertion for a read: %v", err)
	}
	writer, _ := signer.Sign(auth.Principal{User: "rita", Role: auth.Reader}, "site-sx", "r2", 0)
	if err := guard(auth.Operator, auth.AssertionHeader, writer); !errors.Is(err, errs.Forbidden) {
		t.Errorf("reader assertion for a write: %v; want forbidden", err)
	}
	both, _ := signer.Sign(auth.Principal{User: "rita", Role: auth.Admin}, "site-sx", "r3", 0)
	r := httptest.NewRequest(http.MethodGet, "/v1/x", nil)
	r.Header.Set(auth.AssertionHeader, both)
	r.Header.Set("Authorization", "Bearer pt_x")
	if _, err := svc.Require(auth.Reader)(r); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("token and assertion together: %v; want unauthenticated", err)
	}
}
