package swpatch

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"io"
)

// SealUnchecked seals m over payload without validating m: tests make
// archives a careful builder never would.
func SealUnchecked(out io.Writer, m Manifest, payload []byte, key ed25519.PrivateKey) error {
	sum := sha256.Sum256(payload)
	m.PayloadSHA256, m.PayloadSize = hex.EncodeToString(sum[:]), int64(len(payload))
	return writeSealed(out, m, payload, key)
}
