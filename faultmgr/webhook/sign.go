package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Delivery headers.
const (
	HeaderWebhook   = "X-Petrel-Webhook"   // the webhook's ID
	HeaderDelivery  = "X-Petrel-Delivery"  // the delivery ID: the same on every attempt
	HeaderTimestamp = "X-Petrel-Timestamp" // Unix seconds when this attempt was signed
	HeaderSignature = "X-Petrel-Signature" // v1=hex(HMAC-SHA256(secret, timestamp "." delivery "." body))
	HeaderAttempt   = "X-Petrel-Attempt"   // 1 for the first attempt
	HeaderEvent     = "X-Petrel-Event"     // the event's type, or "test"
)

// SecretPrefix starts every signing secret.
const SecretPrefix = "pwh_"

// NewSecret returns a new signing secret: 256 random bits, base64url.
func NewSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("webhook: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// Sign returns the signature header value of a delivery: the HMAC-SHA256,
// keyed by the secret string as shown at create, of the timestamp, the
// delivery ID and the body joined by dots.
func Sign(secret, timestamp, deliveryID string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write([]byte(deliveryID))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	ErrBadSignature = errors.New("webhook: signature does not match")
	ErrStale        = errors.New("webhook: timestamp outside the tolerance")
)

// Verify checks a received delivery's signature and that its timestamp is
// within tolerance of now (receivers should use a few minutes, and drop
// delivery IDs they have seen). It is what a receiver written in Go calls.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts, id := h.Get(HeaderTimestamp), h.Get(HeaderDelivery)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := Sign(secret, ts, id, body)
	// Several comma-separated signatures may come (a future secret rotation).
	for _, got := range strings.Split(h.Get(HeaderSignature), ",") {
		if hmac.Equal([]byte(strings.TrimSpace(got)), []byte(want)) {
			return nil
		}
	}
	return ErrBadSignature
}
