// Package coordtest starts a real single-member etcd for other packages'
// tests: its certificates from a throw-away CA, its data in t.TempDir,
// fast raft ticks, everything stopped at the test's end.
package coordtest

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/pki"
)

// Start starts one etcd member and returns a client of it.
func Start(t testing.TB) *coord.Client {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"), "coordtest CA")
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.IssuePeer("etcd", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := coord.TLSFiles{CertFile: filepath.Join(dir, "etcd.crt"), KeyFile: filepath.Join(dir, "etcd.key"),
		CAFile: filepath.Join(dir, "ca", pki.CACertFile)}
	if err := is.Write(files.CertFile, files.KeyFile); err != nil {
		t.Fatal(err)
	}
	var m *coord.Member
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err = coord.StartMember(ctx, coord.MemberConfig{Name: "test", DataDir: filepath.Join(dir, "data"),
			PeerAddr: freeAddr(t), ClientAddr: freeAddr(t), TLS: files, TickMs: 10, ElectionMs: 100})
		cancel()
		if err == nil || attempt == 3 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	c, err := coord.NewClient(coord.ClientConfig{Endpoints: []string{m.ClientURL()}, TLS: files})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
