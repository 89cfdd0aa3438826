package swpatch

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/petrel-edge/petrel/internal/atomicfile"
)

// GenerateKeyPair makes a patch signing key pair and writes it: the
// private key (PKCS #8 PEM) 0600 at privPath, the public key (PKIX PEM)
// 0644 at pubPath. Existing files are kept, not replaced.
func GenerateKeyPair(privPath, pubPath string) error {
	if _, err := os.Stat(privPath); err == nil {
		if _, err := LoadPrivateKey(privPath); err != nil {
			return err
		}
		if _, err := os.Stat(pubPath); err == nil {
			return nil
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}

// LoadPrivateKey reads a signing key from a file readable by its owner
// only. Errors never carry the key's bytes.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("swpatch: signing key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("swpatch: signing key %s is readable by others; chmod 600 it", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("swpatch: signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("swpatch: signing key %s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("swpatch: signing key %s: not a PKCS #8 key", path)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("swpatch: signing key %s: not an ed25519 key", path)
	}
	return priv, nil
}

// LoadPublicKey reads a trusted patch key (PKIX PEM).
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("swpatch: trusted key: %w", err)
	}
	return ParsePublicKey(b)
}

// ParsePublicKey parses a PKIX PEM ed25519 public key.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("swpatch: trusted key: not a PEM public key")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("swpatch: trusted key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("swpatch: trusted key: not an ed25519 key")
	}
	return pub, nil
}
