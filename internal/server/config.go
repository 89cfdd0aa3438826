package server

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/egress"
)

// FileConfig is the part of a daemon's configuration file every daemon shares.
type FileConfig struct {
	Listen               string          `json:"listen"`
	DataDir              string          `json:"data_dir"`
	Database             string          `json:"database"`               // DSN; empty: SQLite in data_dir
	DatabasePasswordFile string          `json:"database_password_file"` // 0600 file; never put a password in the DSN
	TLS                  TLSConfig       `json:"tls"`
	LogLevel             string          `json:"log_level"` // debug | info | warn | error
	TokenTTL             string          `json:"token_ttl"` // Go duration, e.g. 12h
	History              HistoryConfig   `json:"history"`
	Alarms               faultmgr.Limits `json:"alarms"`
	Webhooks             WebhookConfig   `json:"webhooks"`
}

// WebhookConfig is where webhook deliveries may go (docs/webhooks.md).
type WebhookConfig struct {
	// Allow, when not empty, lists the only CIDR prefixes targets may be in.
	Allow []string `json:"allow"`
	// Deny lists CIDR prefixes targets may not be in, on top of the
	// built-in list (link-local, metadata services, multicast, unspecified).
	// Deny wins over Allow.
	Deny []string `json:"deny"`
	// CACert is a PEM file of CAs trusted for https targets besides the
	// system's.
	CACert string `json:"ca_cert"`
}

// LoadConfig reads a YAML configuration file strictly: an unknown key is an
// error naming it, so a typo never silently falls back to a default.
func LoadConfig(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// ShellConfig turns the shared file settings into a Config.
func (fc FileConfig) ShellConfig(daemon, site string, logger *slog.Logger) (Config, error) {
	if fc.Listen == "" {
		return Config{}, fmt.Errorf("config: listen is required (host:port)")
	}
	if fc.DataDir == "" {
		return Config{}, fmt.Errorf("config: data_dir is required")
	}
	cfg := Config{Daemon: daemon, Site: site, Listen: fc.Listen, DataDir: fc.DataDir, Database: fc.Database,
		TLS: fc.TLS, Logger: logger, History: fc.History, Alarms: fc.Alarms, Webhooks: fc.Webhooks}
	if _, err := egress.NewPolicy(fc.Webhooks.Allow, fc.Webhooks.Deny); err != nil {
		return Config{}, fmt.Errorf("config: webhooks: %w", err)
	}
	if fc.TokenTTL != "" {
		d, err := time.ParseDuration(fc.TokenTTL)
		if err != nil || d < time.Minute {
			return Config{}, fmt.Errorf("config: token_ttl %q: want a duration of at least 1m", fc.TokenTTL)
		}
		cfg.TokenTTL = d
	}
	if fc.DatabasePasswordFile != "" {
		if fc.Database == "" || !strings.Contains(fc.Database, "host=") {
			return Config{}, fmt.Errorf("config: database_password_file needs a key=value PostgreSQL DSN in database")
		}
		pw, err := auth.ReadSecretFile(fc.DatabasePasswordFile)
		if err != nil {
			return Config{}, fmt.Errorf("config: database_password_file: %w", err)
		}
		cfg.Database = fc.Database + " password='" + strings.ReplaceAll(pw, "'", `\'`) + "'"
	}
	return cfg, nil
}

// NewLogger returns a JSON logger at the named level.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if level == "" {
		level = "info"
	}
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("config: log_level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
