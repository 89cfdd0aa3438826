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

	tok, err := s.Sign(ops, "site-sx", "GET", "/v1/hosts", "req-1", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Bound to its call: another method or path is refused.
	if _, err := v.Verify(tok, "POST", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionCall) {
		t.Errorf("Verify for another method = %v; want ErrAssertionCall", err)
	}
	if _, err := v.Verify(tok, "GET", "/v1/users"); !errors.Is(err, auth.ErrAssertionCall) {
		t.Errorf("Verify for another path = %v; want ErrAssertionCall", err)
	}
	p, err := v.Verify(tok, "GET", "/v1/hosts")
	if err != nil || p.User != "central:olga" || p.Role != auth.Operator {
		t.Fatalf("Verify = %+v, %v; want central:olga operator", p, err)
	}
	if _, err := v.Verify(tok, "GET", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionReplay) {
		t.Errorf("second Verify = %v; want replay", err)
	}
	// Two assertions with the same request id are distinct (random nonces).
	r1, _ := s.Sign(ops, "site-sx", "GET", "/v1/hosts", "same-id", 0)
	r2, _ := s.Sign(ops, "site-sx", "GET", "/v1/hosts", "same-id", 0)
	if _, err := v.Verify(r1, "GET", "/v1/hosts"); err != nil {
		t.Error(err)
	}
	if _, err := v.Verify(r2, "GET", "/v1/hosts"); err != nil {
		t.Errorf("a second call reusing a request id: %v; want accepted", err)
	}
	other, _ := s.Sign(ops, "site-dx", "GET", "/v1/hosts", "req-2", 0)
	if _, err := v.Verify(other, "GET", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionSite) {
		t.Errorf("assertion for another site: %v", err)
	}
	late, _ := s.Sign(ops, "site-sx", "GET", "/v1/hosts", "req-3", 10*time.Second)
	clk.Add(11 * time.Second)
	if _, err := v.Verify(late, "GET", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionExpired) || !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("expired assertion: %v", err)
	}
	// Tampering with the payload, or another key's signature, fails.
	fresh, _ := s.Sign(ops, "site-sx", "GET", "/v1/hosts", "req-4", 0)
	payload, sig, _ := strings.Cut(fresh, ".")
	tampered := payload[:len(payload)-2] + "xx." + sig
	if _, err := v.Verify(tampered, "GET", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionInvalid) {
		t.Errorf("tampered assertion: %v", err)
	}
	foreign, _ := signer.Sign(ops, "site-sx", "GET", "/v1/hosts", "req-5", 0)
	if _, err := v.Verify(foreign, "GET", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionInvalid) {
		t.Errorf("assertion signed by another key: %v", err)
	}
	for _, junk := range []string{"", "a.b", "nodot", strings.Repeat("x", 5000)} {
		if _, err := v.Verify(junk, "GET", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionInvalid) {
			t.Errorf("Verify(%q) = %v", junk[:min(len(junk), 10)], err)
		}
	}
	// TTL is capped at 60 s.
	long, _ := s.Sign(ops, "site-sx", "GET", "/v1/hosts", "req-6", time.Hour)
	clk.Add(61 * time.Second)
	if _, err := v.Verify(long, "GET", "/v1/hosts"); !errors.Is(err, auth.ErrAssertionExpired) {
		t.Errorf("an hour-long assertion after 61 s: %v; want expired (capped at 60 s)", err)
	}
}

func TestGuardAcceptsAssertionsOnlyWhenConfigured(t *testing.T) {
	svc, clk := newService(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer := auth.NewAssertionSigner(priv, clk.Now)
	// The guard runs as the site's link handler would run it.
	guardVia := func(viaLink bool, need auth.Role, method, header, value string) error {
		var err error
		h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, err = svc.Require(need)(r) }))
		if viaLink {
			h = auth.ViaLink(h)
		}
		r := httptest.NewRequest(method, "/v1/x", nil)
		if header != "" {
			r.Header.Set(header, value)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		return err
	}
	guard := func(need auth.Role, header, value string) error {
		m := http.MethodGet
		if need != auth.Reader {
			m = http.MethodPost
		}
		return guardVia(true, need, m, header, value)
	}
	reader, _ := signer.Sign(auth.Principal{User: "rita", Role: auth.Reader}, "site-sx", "GET", "/v1/x", "r1", 0)
	if err := guard(auth.Reader, auth.AssertionHeader, reader); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("assertion at a daemon that does not accept them: %v", err)
	}
	svc.AcceptAssertions(auth.NewAssertionVerifier(pub, "site-sx", clk.Now))
	// Not over the link (the site's public listener): refused.
	offLink, _ := signer.Sign(auth.Principal{User: "rita", Role: auth.Reader}, "site-sx", "GET", "/v1/x", "r0", 0)
	if err := guardVia(false, auth.Reader, http.MethodGet, auth.AssertionHeader, offLink); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("assertion on the public listener: %v; want unauthenticated", err)
	}
	if err := guard(auth.Reader, auth.AssertionHeader, reader); err != nil {
		t.Errorf("reader assertion for a read: %v", err)
	}
	writer, _ := signer.Sign(auth.Principal{User: "rita", Role: auth.Reader}, "site-sx", "POST", "/v1/x", "r2", 0)
	if err := guard(auth.Operator, auth.AssertionHeader, writer); !errors.Is(err, errs.Forbidden) {
		t.Errorf("reader assertion for a write: %v; want forbidden", err)
	}
	both, _ := signer.Sign(auth.Principal{User: "rita", Role: auth.Admin}, "site-sx", "GET", "/v1/x", "r3", 0)
	r := httptest.NewRequest(http.MethodGet, "/v1/x", nil)
	r.Header.Set(auth.AssertionHeader, both)
	r.Header.Set("Authorization", "Bearer pt_x")
	if _, err := svc.Require(auth.Reader)(r); !errors.Is(err, errs.Unauthenticated) {
		t.Errorf("token and assertion together: %v; want unauthenticated", err)
	}
}
