package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/atomicfile"
)

// credentials is what 'petrel login' saves (mode 0600) for later commands.
type credentials struct {
	URL       string    `json:"url"`
	Token     string    `json:"token"`
	CACert    string    `json:"ca_cert"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (a *app) credentialsPath() string {
	if d := a.getenv("PETREL_CONFIG_DIR"); d != "" {
		return filepath.Join(d, "credentials.json")
	}
	if d := a.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "petrel", "credentials.json")
	}
	home := a.getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".config", "petrel", "credentials.json")
}

func (a *app) loadCredentials() (credentials, error) {
	var c credentials
	b, err := os.ReadFile(a.credentialsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", a.credentialsPath(), err)
	}
	return c, nil
}

func (a *app) saveCredentials(c credentials) error {
	p := a.credentialsPath()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return atomicfile.Write(p, append(b, '\n'), 0o600)
}

// endpoint resolves URL, token and CA: flags, then environment, then the
// saved login (used only for the URL it was made for).
func (a *app) endpoint() (url, token, ca string) {
	url, token, ca = a.url, a.token, a.caCert
	if url == "" {
		url = a.getenv("PETREL_URL")
	}
	if token == "" {
		token = a.getenv("PETREL_TOKEN")
	}
	if ca == "" {
		ca = a.getenv("PETREL_CA_CERT")
	}
	if c, err := a.loadCredentials(); err == nil && c.Token != "" && (url == "" || url == c.URL) {
		if url == "" {
			url = c.URL
		}
		if token == "" {
			token = c.Token
		}
		if ca == "" {
			ca = c.CACert
		}
	}
	return url, token, ca
}

func (a *app) siteName() string {
	if a.site != "" {
		return a.site
	}
	return a.getenv("PETREL_SITE")
}

// client returns an API client; with --site, calls go through central's relay.
func (a *app) client() (*client.Client, error) {
	url, token, ca := a.endpoint()
	if url == "" {
		return nil, usagef("no API URL: pass --url, set PETREL_URL, or run 'petrel login --url URL'")
	}
	cfg := client.Config{URL: url, Token: token, CACert: ca}
	if s := a.siteName(); s != "" {
		cfg.PathPrefix = "/v1/subclouds/" + s + "/api"
	}
	return client.New(cfg)
}
