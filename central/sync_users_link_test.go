package central_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/subcloud"
)

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// siteLogin logs in at a site's own API (not through central).
func siteLogin(t *testing.T, s *subcloud.Subcloud, user, password string) error {
	t.Helper()
	c := servertest.Client(t, s, "")
	var it auth.IssuedToken
	return c.Do(context.Background(), http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: user, Password: password}, &it)
}

// TestSyncUsersToRealSites: central's projects and users reach managed
// sites with their password hashes (a site checks logins by itself); a
// password change and a delete follow; a site's own user of the same name
// is left alone and reported; central's bootstrap admin is never synced;
// no password hash ever appears in a log.
func TestSyncUsersToRealSites(t *testing.T) {
	logs := &lockedBuffer{}
	logTo := func(t *testing.T) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f := startCentralLogging(t, logTo(t))
	ctx := context.Background()
	sites := map[string]*subcloud.Subcloud{}
	for _, name := range []string{"site-a", "site-b"} {
		cert, key := f.siteFiles(t, name)
		shell := servertest.Shell(t)
		shell.Logger = logTo(t)
		sites[name], _ = f.startSiteServer(t, shell, name, cert, key)
		f.waitAvailability(t, name, central.Online)
		if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds/"+name+"/action", nil,
			central.SubcloudActionRequest{Action: "manage"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// site-b has its own "clash" user before central defines one.
	if _, err := sites["site-b"].Shell().Auth.CreateUser(ctx, "clash", auth.Reader, "site-b-own-password"); err != nil {
		t.Fatal(err)
	}
	const pw1, pw2 = "first-password-123", "second-password-456"
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/projects", nil, map[string]string{"name": "tenant-x", "description": "X"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, u := range []auth.CreateUserRequest{{Name: "ops1", Role: auth.Operator, Project: "tenant-x", Password: pw1},
		{Name: "clash", Role: auth.Admin, Password: "central-clash-password"}} {
		if err := f.admin.Do(ctx, http.MethodPost, "/v1/users", nil, u, nil); err != nil {
			t.Fatal(err)
		}
	}
	syncOf := func(site string) central.SyncStatus {
		var sc central.Subcloud
		if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/"+site, nil, nil, &sc); err != nil {
			t.Fatal(err)
		}
		return sc.Sync["users"]
	}
	// Wait on the site's store, never by trying logins: failed logins
	// would trip the site's lockout.
	hashAt := func(s *subcloud.Subcloud, user string) string {
		us, err := s.Shell().AuthStore.SyncedUsers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			if u.Name == user {
				return auth.HashDigest(u.PasswordHash)
			}
		}
		return ""
	}
	first := map[string]string{}
	for name, s := range sites {
		waitFor(t, name+": ops1 synced", func() (bool, string) {
			first[name] = hashAt(s, "ops1")
			return first[name] != "", "not yet"
		})
		if err := siteLogin(t, s, "ops1", pw1); err != nil {
			t.Errorf("%s: ops1 logs in with central's password: %v", name, err)
		}
	}
	// The site's own "clash" keeps its password; site-b reports the clash.
	if err := siteLogin(t, sites["site-b"], "clash", "site-b-own-password"); err != nil {
		t.Errorf("site-b's own clash user: %v", err)
	}
	if err := siteLogin(t, sites["site-a"], "clash", "central-clash-password"); err != nil {
		t.Errorf("central's clash user at site-a: %v", err)
	}
	waitFor(t, "site-b users out-of-sync, site-a in-sync", func() (bool, string) {
		return syncOf("site-b") == central.OutOfSync && syncOf("site-a") == central.InSync, string(syncOf("site-b")) + " " + string(syncOf("site-a"))
	})
	// Central's admin is not synced: its password does not work at a site.
	centralPW, err := auth.ReadSecretFile(filepath.Join(f.dir, server.AdminPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := siteLogin(t, sites["site-a"], "admin", centralPW); err == nil {
		t.Error("central's bootstrap admin password works at a site")
	}
	// A password change follows; the old password stops working.
	if err := f.admin.Do(ctx, http.MethodPut, "/v1/users/ops1/password", nil, auth.PasswordRequest{Password: pw2}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new password's hash at site-a", func() (bool, string) {
		h := hashAt(sites["site-a"], "ops1")
		return h != "" && h != first["site-a"], "unchanged"
	})
	if err := siteLogin(t, sites["site-a"], "ops1", pw2); err != nil {
		t.Errorf("the new password at site-a: %v", err)
	}
	if err := siteLogin(t, sites["site-a"], "ops1", pw1); err == nil {
		t.Error("the old password still works at site-a")
	}
	// A delete follows.
	if err := f.admin.Do(ctx, http.MethodDelete, "/v1/users/ops1", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ops1 gone at site-a", func() (bool, string) {
		return hashAt(sites["site-a"], "ops1") == "", "still there"
	})
	if err := siteLogin(t, sites["site-a"], "ops1", pw2); err == nil {
		t.Error("a deleted user still logs in at site-a")
	}
	// The site-only sync routes refuse a direct caller, even an admin.
	sa := servertest.Client(t, sites["site-a"], servertest.AdminToken(t, sites["site-a"]))
	if err := sa.Do(ctx, http.MethodGet, "/v1/sync/users", nil, nil, nil); err == nil {
		t.Error("GET /v1/sync/users with a site admin token: allowed; want 403")
	}
	if strings.Contains(logs.String(), "$argon2id$") {
		t.Error("a password hash appears in the logs")
	}
}

// testWriter writes to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startCentralLogging is startCentral with its own logger.
func startCentralLogging(t *testing.T, log *slog.Logger) fleet {
	t.Helper()
	shell := servertest.Shell(t)
	shell.Logger = log
	c, err := central.New(context.Background(), central.Config{Shell: shell, SiteListen: "127.0.0.1:0", UpdateInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	return fleet{c: c, admin: plainClient(t, c, servertest.AdminToken(t, c)), dir: shell.DataDir}
}
