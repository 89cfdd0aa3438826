package subcloud_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// BenchmarkReads measures the site API's read path in process (no TLS, no
// network): the half-list, half-get mix of `petrel bench api`.
func BenchmarkReads(b *testing.B) {
	ctx := context.Background()
	s, err := subcloud.New(ctx, subcloud.Config{Site: "bench", Shape: inventory.Simplex, Shell: server.Config{
		Listen: "127.0.0.1:0", DataDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Shell().Close()
	for i := range 200 {
		h := inventory.Host{UUID: uuid.NewString(), Name: fmt.Sprintf("worker-%d", i), Personality: inventory.Worker,
			Provisioning: inventory.Provisioned, Administrative: inventory.Unlocked, Operational: inventory.Enabled,
			Availability: inventory.Available}
		if _, err := s.Hosts.PutHost(ctx, h, 0); err != nil {
			b.Fatal(err)
		}
	}
	u, _ := s.Shell().Auth.CreateUser(ctx, "bench", auth.Reader, "bench-password-1")
	tok, _, err := s.Shell().Auth.CreateToken(ctx, auth.Principal{User: u.Name, Role: u.Role}, auth.TokenRequest{})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Shell().REST
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			path := "/v1/hosts?limit=50"
			if i%2 == 1 {
				path = fmt.Sprintf("/v1/hosts/worker-%d", i%200)
			}
			i++
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatalf("%s: %d %s", path, w.Code, w.Body)
			}
			_, _ = io.Copy(io.Discard, w.Body)
		}
	})
}
