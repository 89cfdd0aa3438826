package bmc

import (
	"errors"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/internal/atomicfile"
)

// Credentials are a BMC's user name and password. They are loaded from a
// 0600 file by whoever configures the client and never appear in logs,
// errors or argv: String and GoString print the user name only.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// String hides the password.
func (c Credentials) String() string { return "user " + c.Username + " (password hidden)" }

// GoString hides the password from %#v too.
func (c Credentials) GoString() string { return c.String() }

// ErrInsecureCredentialsFile reports a credentials file that users other
// than its owner can read or write.
var ErrInsecureCredentialsFile = errors.New("bmc: credentials file is accessible by others; chmod 600 it")

// LoadCredentials reads a credentials file: YAML (or JSON) with the keys
// username and password, mode 0600 or stricter.
func LoadCredentials(path string) (Credentials, error) {
	var c Credentials
	fi, err := os.Stat(path)
	if err != nil {
		return c, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return c, fmt.Errorf("%s (mode %o): %w", path, fi.Mode().Perm(), ErrInsecureCredentialsFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		// The YAML error may quote the file's content: say only where.
		return Credentials{}, fmt.Errorf("bmc: credentials file %s: not YAML with username and password", path)
	}
	if c.Username == "" || c.Password == "" {
		return Credentials{}, fmt.Errorf("bmc: credentials file %s: username and password are required", path)
	}
	return c, nil
}

// WriteCredentials writes c to path with mode 0600, atomically.
func WriteCredentials(path string, c Credentials) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
