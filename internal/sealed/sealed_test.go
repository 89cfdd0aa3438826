package sealed_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-edge/petrel/internal/sealed"
)

func TestSealOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), sealed.KeyFile)
	box, err := sealed.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	secret := []byte("pwh_very-secret-value")
	s1, s2 := box.Seal(secret, "webhook:a"), box.Seal(secret, "webhook:a")
	if bytes.Contains(s1, secret) || bytes.Equal(s1, s2) {
		t.Errorf("sealed values hold the plaintext or repeat: %x %x", s1, s2)
	}
	if got, err := box.Open(s1, "webhook:a"); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("Open(Seal(x)) = %q, %v; want %q", got, err, secret)
	}
	// Reloaded from the file: the same key.
	again, err := sealed.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Open(s1, "webhook:a"); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("Open after reload = %q, %v", got, err)
	}
	// Another context, another key, a flipped bit, a short value: ErrOpen.
	other, _ := sealed.LoadOrCreate(filepath.Join(t.TempDir(), sealed.KeyFile))
	flipped := bytes.Clone(s1)
	flipped[len(flipped)-1] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"other context": func() ([]byte, error) { return box.Open(s1, "webhook:b") },
		"other key":     func() ([]byte, error) { return other.Open(s1, "webhook:a") },
		"flipped bit":   func() ([]byte, error) { return box.Open(flipped, "webhook:a") },
		"short":         func() ([]byte, error) { return box.Open(s1[:5], "webhook:a") },
	} {
		if _, err := open(); !errors.Is(err, sealed.ErrOpen) {
			t.Errorf("%s: Open = %v; want ErrOpen", name, err)
		}
	}
}

func TestKeyFileReadableByOthersRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), sealed.KeyFile)
	if _, err := sealed.LoadOrCreate(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sealed.LoadOrCreate(path); err == nil {
		t.Error("LoadOrCreate accepted a key file of mode 0644")
	}
}
