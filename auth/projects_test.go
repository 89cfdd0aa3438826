package auth_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

func TestProjectsAndMembership(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	if _, err := s.CreateProject(ctx, "tenant-a", "first tenant"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateProject(ctx, "bad name", ""); !errors.Is(err, errs.Invalid) {
		t.Errorf("CreateProject(bad name) = %v; want invalid", err)
	}
	// An unknown project is an invalid argument naming the field.
	_, err := s.CreateProjectUser(ctx, "tom", auth.Operator, "tenant-z", "a-long-password")
	var fe *errs.FieldError
	if !errors.As(err, &fe) || fe.Field != "project" {
		t.Errorf("CreateProjectUser(unknown project) = %v; want a project field error", err)
	}
	u, err := s.CreateProjectUser(ctx, "tom", auth.Operator, "tenant-a", "a-long-password")
	if err != nil || u.Project != "tenant-a" {
		t.Fatalf("CreateProjectUser = %+v, %v", u, err)
	}
	// Login and API tokens carry the user's project into the principal.
	secret, tok, err := s.Login(ctx, "tom", "a-long-password")
	if err != nil || tok.Project != "tenant-a" {
		t.Fatalf("Login = %+v, %v; want a token of tenant-a", tok, err)
	}
	p, err := s.Authenticate(ctx, secret)
	if err != nil || p.Project != "tenant-a" || p.ProjectName() != "tenant-a" {
		t.Errorf("Authenticate = %+v, %v; want project tenant-a", p, err)
	}
	if _, err := s.CreateUser(ctx, "root", auth.Admin, "a-long-password"); err != nil {
		t.Fatal(err)
	}
	root := auth.Principal{User: "root", Role: auth.Admin, Project: auth.DefaultProject}
	secret, _, err = s.CreateToken(ctx, root, auth.TokenRequest{User: "tom"})
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Authenticate(ctx, secret); p.Project != "tenant-a" {
		t.Errorf("admin-made token for tom: project %q; want tenant-a", p.Project)
	}
	if err := s.DeleteProject(ctx, "tenant-a"); !errors.Is(err, auth.ErrProjectInUse) || !errors.Is(err, errs.Conflict) {
		t.Errorf("DeleteProject(with a user) = %v; want ErrProjectInUse (conflict)", err)
	}
	if err := s.DeleteProject(ctx, auth.DefaultProject); !errors.Is(err, errs.Conflict) {
		t.Errorf("DeleteProject(admin) = %v; want conflict", err)
	}
	if err := s.DeleteUser(ctx, "tom"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteProject(ctx, "tenant-a"); err != nil {
		t.Errorf("DeleteProject(empty) = %v", err)
	}
}

func TestAssertionCarriesProject(t *testing.T) {
	clk := &clock{}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer := auth.NewAssertionSigner(priv, clk.Now)
	v := auth.NewAssertionVerifier(pub, "site-sx", clk.Now)
	a, err := signer.Sign(auth.Principal{User: "tom", Role: auth.Operator, Project: "tenant-a"}, "site-sx", "GET", "/v1/x", "r1", 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(a, "GET", "/v1/x")
	if err != nil || p.Project != "tenant-a" || p.User != "central:tom" {
		t.Errorf("Verify = %+v, %v; want central:tom of tenant-a", p, err)
	}
	// An assertion without a project (an older central) is the admin project's.
	a, _ = signer.Sign(auth.Principal{User: "root", Role: auth.Admin}, "site-sx", "GET", "/v1/x", "r2", 0)
	if p, _ := v.Verify(a, "GET", "/v1/x"); p.ProjectName() != auth.DefaultProject {
		t.Errorf("assertion without a project: %q; want admin", p.ProjectName())
	}
}

// TestProjectRoutes drives /v1/projects, /v1/users and /v1/whoami over HTTP.
func TestProjectRoutes(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	srv, err := rest.New(rest.Config{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s.Register(srv)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	for _, u := range []struct {
		name string
		role auth.Role
	}{{"root", auth.Admin}, {"ops", auth.Operator}} {
		if _, err := s.CreateUser(ctx, u.name, u.role, "a-long-password"); err != nil {
			t.Fatal(err)
		}
	}
	login := func(name string) string {
		secret, _, err := s.Login(ctx, name, "a-long-password")
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	root, ops := login("root"), login("ops")
	call := func(token, method, path string, body, out any) int {
		t.Helper()
		var buf bytes.Buffer
		if body != nil {
			_ = json.NewEncoder(&buf).Encode(body)
		}
		req, _ := http.NewRequest(method, ts.URL+path, &buf)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			_ = json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	if st := call(ops, "POST", "/v1/projects", auth.CreateProjectRequest{Name: "tenant-a"}, nil); st != http.StatusForbidden {
		t.Errorf("operator creates a project: %d; want 403", st)
	}
	var p auth.Project
	if st := call(root, "POST", "/v1/projects", auth.CreateProjectRequest{Name: "tenant-a", Description: "A"}, &p); st != http.StatusCreated || p.Name != "tenant-a" {
		t.Fatalf("create project: %d %+v", st, p)
	}
	if st := call(root, "POST", "/v1/projects", auth.CreateProjectRequest{Name: "tenant-a"}, nil); st != http.StatusConflict {
		t.Errorf("create a project twice: %d; want 409", st)
	}
	var list rest.List[auth.Project]
	if st := call(root, "GET", "/v1/projects", nil, &list); st != http.StatusOK || len(list.Items) != 2 {
		t.Errorf("list projects: %d %+v; want admin and tenant-a", st, list)
	}
	if st := call(ops, "GET", "/v1/projects", nil, nil); st != http.StatusForbidden {
		t.Errorf("operator lists projects: %d; want 403", st)
	}
	var errBody rest.ErrorBody
	if st := call(root, "POST", "/v1/users", auth.CreateUserRequest{Name: "tina", Role: auth.Operator, Project: "tenant-z", Password: "a-long-password"}, &errBody); st != http.StatusBadRequest || errBody.Error.Field != "project" {
		t.Errorf("create a user in an unknown project: %d %+v; want 400 naming project", st, errBody)
	}
	var u auth.User
	if st := call(root, "POST", "/v1/users", auth.CreateUserRequest{Name: "tina", Role: auth.Operator, Project: "tenant-a", Password: "a-long-password"}, &u); st != http.StatusCreated || u.Project != "tenant-a" {
		t.Fatalf("create tina: %d %+v", st, u)
	}
	tina := login("tina")
	var who auth.WhoAmI
	if st := call(tina, "GET", "/v1/whoami", nil, &who); st != http.StatusOK || who.Project != "tenant-a" {
		t.Errorf("whoami as tina: %d %+v; want project tenant-a", st, who)
	}
	if st := call(tina, "GET", "/v1/projects/tenant-a", nil, &p); st != http.StatusOK || p.Description != "A" {
		t.Errorf("tina shows her project: %d %+v", st, p)
	}
	if st := call(tina, "GET", "/v1/projects/admin", nil, nil); st != http.StatusNotFound {
		t.Errorf("tina shows the admin project: %d; want 404", st)
	}
	var users rest.List[auth.User]
	if st := call(root, "GET", "/v1/users?project=tenant-a", nil, &users); st != http.StatusOK || len(users.Items) != 1 || users.Items[0].Name != "tina" {
		t.Errorf("users of tenant-a: %d %+v", st, users)
	}
	if st := call(root, "DELETE", "/v1/projects/tenant-a", nil, nil); st != http.StatusConflict {
		t.Errorf("delete a project with users: %d; want 409", st)
	}
	if st := call(root, "DELETE", "/v1/users/tina", nil, nil); st != http.StatusNoContent {
		t.Fatalf("delete tina: %d", st)
	}
	if st := call(root, "DELETE", "/v1/projects/tenant-a", nil, nil); st != http.StatusNoContent {
		t.Errorf("delete an empty project: %d; want 204", st)
	}
	if st := call(root, "DELETE", "/v1/projects/admin", nil, nil); st != http.StatusConflict {
		t.Errorf("delete the admin project: %d; want 409", st)
	}
}
