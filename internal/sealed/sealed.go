// Package sealed encrypts small secrets for storage at rest (webhook signing
// secrets, later BMC passwords) with AES-256-GCM under a per-daemon key kept
// in a 0600 file in the data directory (ENGINEERING.md: secrets are stored
// encrypted with a per-site key; the key file is replicated to a standby
// with the database, never stored in it).
//
// Every sealed value is bound to a context string (for example
// "webhook:ID"), so a sealed value copied to another row does not open.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/petrel-edge/petrel/internal/atomicfile"
)

// KeyFile is the key's file name in a daemon's data directory.
const KeyFile = "sealing.key"

// version prefixes every sealed value, so the format can change.
const version byte = 1

// ErrOpen reports a sealed value that does not open: another key, another
// context, or corruption. It carries no detail about the value.
var ErrOpen = errors.New("sealed: value does not open with this key")

// Box seals and opens values under one key. It is safe for concurrent use.
type Box struct{ aead cipher.AEAD }

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("sealed: key is %d bytes; want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// LoadOrCreate reads the key in path (hex, mode 0600), creating a new random
// key there if the file does not exist. A key file others may read is
// refused.
func LoadOrCreate(path string) (*Box, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("sealed: create key: %w", err)
		}
		return New(key)
	}
	if err != nil {
		return nil, fmt.Errorf("sealed: key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sealed: key file %s is readable by others (mode %o); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealed: key: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("sealed: key file %s does not hold a hex key", path)
	}
	return New(key)
}

// Seal encrypts plaintext bound to context. The result is a version byte,
// a random nonce and the ciphertext with its tag.
func (b *Box) Seal(plaintext []byte, context string) []byte {
	out := make([]byte, 1+b.aead.NonceSize(), 1+b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		panic("sealed: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	return b.aead.Seal(out, out[1:], plaintext, []byte(context))
}

// Open decrypts a value Seal made with the same context.
func (b *Box) Open(sealed []byte, context string) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < 1+n+b.aead.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	pt, err := b.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(context))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
