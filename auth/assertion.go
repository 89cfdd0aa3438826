package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/errs"
)

// AssertionHeader carries a relayed call's assertion from central to a site.
// Central authenticates and authorises the operator, strips Authorization,
// and forwards this instead: sites never see central's tokens (brief §3).
const AssertionHeader = "X-Petrel-Assertion"

// MaxAssertionTTL bounds an assertion's life.
const MaxAssertionTTL = 60 * time.Second

// Assertion is what central vouches for about one relayed call.
type Assertion struct {
	User      string    `json:"user"`
	Role      Role      `json:"role"`
	Project   string    `json:"project,omitempty"` // the user's project; absent (older centrals): admin
	Site      string    `json:"site"`              // the only site that may accept it
	Method    string    `json:"method"`            // the only call it vouches for
	Path      string    `json:"path"`              // (escaped path, as the site receives it)
	RequestID string    `json:"request_id"`        // for correlating logs
	Nonce     string    `json:"nonce"`             // random, unique per assertion: replays are refused
	IssuedAt  time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
}

// Assertion errors; each is unauthenticated at the site.
var (
	ErrAssertionInvalid = errs.New(errs.Unauthenticated, "relay assertion invalid")
	ErrAssertionExpired = errs.New(errs.Unauthenticated, "relay assertion expired")
	ErrAssertionReplay  = errs.New(errs.Unauthenticated, "relay assertion replayed")
	ErrAssertionSite    = errs.New(errs.Unauthenticated, "relay assertion is for another site")
	ErrAssertionCall    = errs.New(errs.Unauthenticated, "relay assertion is for another call")
)

// AssertionSigner signs assertions with central's key.
type AssertionSigner struct {
	key ed25519.PrivateKey
	now func() time.Time
}

// LoadOrCreateSigningKey loads central's relay key from path (0600), making
// one on first use, and returns a signer and the public key.
func LoadOrCreateSigningKey(path string) (*AssertionSigner, ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, nil, gerr
		}
		if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(priv.Seed())+"\n"), 0o600); err != nil {
			return nil, nil, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, nil, fmt.Errorf("auth: relay key %s is not an ed25519 seed", path)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return NewAssertionSigner(priv, nil), priv.Public().(ed25519.PublicKey), nil
}

// NewAssertionSigner returns a signer; now defaults to the wall clock.
func NewAssertionSigner(key ed25519.PrivateKey, now func() time.Time) *AssertionSigner {
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	return &AssertionSigner{key: key, now: now}
}

// Sign vouches for p's call `method path` to site: the assertion expires
// after ttl (at most MaxAssertionTTL).
func (s *AssertionSigner) Sign(p Principal, site, method, path, requestID string, ttl time.Duration) (string, error) {
	if ttl <= 0 || ttl > MaxAssertionTTL {
		ttl = MaxAssertionTTL
	}
	if site == "" || method == "" || path == "" || !p.Role.Valid() {
		return "", errors.New("auth: an assertion needs a site, a method, a path and a valid role")
	}
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", err
	}
	now := s.now()
	payload, err := json.Marshal(Assertion{User: p.User, Role: p.Role, Project: p.Project, Site: site, Method: method, Path: path,
		RequestID: requestID, Nonce: base64.RawURLEncoding.EncodeToString(nonce[:]), IssuedAt: now, ExpiresAt: now.Add(ttl)})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(s.key, []byte("petrel-assertion-v1."+enc))
	return enc + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// AssertionVerifier checks assertions at one site.
type AssertionVerifier struct {
	pub  ed25519.PublicKey
	site string
	now  func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // nonce -> expiry
}

// NewAssertionVerifier returns a verifier for site trusting central's key.
func NewAssertionVerifier(pub ed25519.PublicKey, site string, now func() time.Time) *AssertionVerifier {
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	return &AssertionVerifier{pub: pub, site: site, now: now, seen: map[string]time.Time{}}
}

// maxSeen bounds the replay cache; at 60 s lifetimes this is over 1,600
// relayed calls per second per site.
const maxSeen = 100000

// Verify checks an assertion's signature, site, call (method and escaped
// path), lifetime and freshness and returns the principal it vouches for.
// Each assertion (its nonce) is accepted once.
func (v *AssertionVerifier) Verify(token, method, path string) (Principal, error) {
	enc, sigEnc, ok := strings.Cut(token, ".")
	if !ok || len(token) > 4096 {
		return Principal{}, ErrAssertionInvalid
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigEnc)
	if err != nil || !ed25519.Verify(v.pub, []byte("petrel-assertion-v1."+enc), sig) {
		return Principal{}, ErrAssertionInvalid
	}
	payload, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return Principal{}, ErrAssertionInvalid
	}
	var a Assertion
	if err := json.Unmarshal(payload, &a); err != nil || !a.Role.Valid() || a.Nonce == "" {
		return Principal{}, ErrAssertionInvalid
	}
	now := v.now()
	switch {
	case a.Site != v.site:
		return Principal{}, ErrAssertionSite
	case a.Method != method || a.Path != path:
		return Principal{}, ErrAssertionCall
	case a.ExpiresAt.Sub(a.IssuedAt) > MaxAssertionTTL || a.IssuedAt.After(now.Add(5*time.Second)):
		return Principal{}, ErrAssertionInvalid // too long-lived, or from the future (5 s clock skew allowed)
	case !now.Before(a.ExpiresAt):
		return Principal{}, ErrAssertionExpired
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, dup := v.seen[a.Nonce]; dup {
		return Principal{}, ErrAssertionReplay
	}
	if len(v.seen) >= maxSeen {
		for id, exp := range v.seen {
			if !now.Before(exp) {
				delete(v.seen, id)
			}
		}
		if len(v.seen) >= maxSeen {
			return Principal{}, errs.Wrapf(errs.RateLimited, "too many relayed calls in flight")
		}
	}
	v.seen[a.Nonce] = a.ExpiresAt
	if a.Project != "" && ValidateProjectName("project", a.Project) != nil {
		return Principal{}, ErrAssertionInvalid
	}
	return Principal{User: "central:" + a.User, Role: a.Role, Project: a.Project}, nil
}

// EncodePublicKey returns a public key as PEM (what sites are configured with).
func EncodePublicKey(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// LoadPublicKey reads a PEM public key written by EncodePublicKey.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("auth: %s holds no PEM public key", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("auth: %s is not an ed25519 key", path)
	}
	return pub, nil
}
