package auth

import (
	"strings"
	"testing"
)

func TestPasswordHash(t *testing.T) {
	h := hashPassword("correct horse battery")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q is not an argon2id PHC string with the expected parameters", h)
	}
	if strings.Contains(h, "correct horse") {
		t.Error("hash contains the password")
	}
	if !verifyPassword(h, "correct horse battery") {
		t.Error("verifyPassword(right) = false")
	}
	if verifyPassword(h, "correct horse batterY") {
		t.Error("verifyPassword(wrong) = true")
	}
	if h2 := hashPassword("correct horse battery"); h2 == h {
		t.Error("two hashes of one password are equal: no salt")
	}
	for _, bad := range []string{"", "$argon2id$", "$argon2i$v=19$m=1,t=1,p=1$AA$AA", "$argon2id$v=19$m=99999999,t=1,p=1$AA$AA"} {
		if verifyPassword(bad, "x") {
			t.Errorf("verifyPassword(%q) = true", bad)
		}
	}
}
