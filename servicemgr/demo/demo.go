// Package demo is the built-in demo service (`petrel demo-service`) that
// service groups run in the lab: a small HTTP server that answers, from
// the role.json its agent writes, whether this member is active.
//
//	GET /         200 and the role file's JSON while the role is active;
//	              503 and the same shape otherwise (standby, or "unknown"
//	              while the file is missing or unreadable): a standby does
//	              not serve
//	GET /healthz  200 "ok" while the process runs (health checks)
//
// The role file is read on every request (it is tiny), so a role the
// agent has just replaced (atomically) is the one the next request sees.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/petrel-edge/petrel/servicemgr"
)

const (
	// RoleFileName is the file in the state directory that the agent
	// writes (servicemgr.RoleFile).
	RoleFileName = "role.json"
	// RoleUnknown is the role answered while the role file is missing or
	// unreadable.
	RoleUnknown servicemgr.Role = "unknown"
	// ShutdownTimeout bounds a graceful stop: requests in flight get this
	// long to finish, then every connection is closed.
	ShutdownTimeout = 2 * time.Second

	maxRoleFile = 64 << 10
)

// ErrBadRoleFile reports a role file that is not a RoleFile with the role
// active or standby.
var ErrBadRoleFile = errors.New("demo: bad role file")

// Config configures a Server.
type Config struct {
	// Listen lists the literal "ip:port" addresses Run listens on. An
	// address the host does not hold yet (a floating address) can be
	// given: it is bound with IP_FREEBIND and answers once it is added.
	Listen []string
	// StateDir holds role.json (required).
	StateDir string
	// Host and Group are answered while the role file is missing or
	// unreadable, and fill a role file that leaves them empty. The
	// command takes them from PETREL_HOST and PETREL_GROUP.
	Host, Group string
	// Logger is required.
	Logger *slog.Logger
}

// Server is one demo service member.
type Server struct {
	cfg Config

	mu   sync.Mutex
	last string // the last role (or error) logged, to log changes only
}

// New checks cfg and returns a Server; it opens nothing.
func New(cfg Config) (*Server, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("demo: StateDir is required")
	}
	if cfg.Logger == nil {
		return nil, errors.New("demo: Logger is required")
	}
	for _, a := range cfg.Listen {
		if _, err := netip.ParseAddrPort(a); err != nil {
			return nil, fmt.Errorf("demo: listen address %q: want ip:port: %w", a, err)
		}
	}
	return &Server{cfg: cfg}, nil
}

// Handler serves GET / and GET /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.serveRole)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	return mux
}

// Role reads the role file now. A missing or unreadable file, or one with
// a role other than active or standby, is an error (wrapping
// ErrBadRoleFile for a file that does not parse).
func (s *Server) Role() (servicemgr.RoleFile, error) {
	path := filepath.Join(s.cfg.StateDir, RoleFileName)
	f, err := os.Open(path)
	if err != nil {
		return servicemgr.RoleFile{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRoleFile))
	if err != nil {
		return servicemgr.RoleFile{}, fmt.Errorf("read %s: %w", path, err)
	}
	var rf servicemgr.RoleFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return servicemgr.RoleFile{}, fmt.Errorf("%s: %w: %w", path, ErrBadRoleFile, err)
	}
	if rf.Role != servicemgr.RoleActive && rf.Role != servicemgr.RoleStandby {
		return servicemgr.RoleFile{}, fmt.Errorf("%s: role %q: %w", path, rf.Role, ErrBadRoleFile)
	}
	if rf.Host == "" {
		rf.Host = s.cfg.Host
	}
	if rf.Group == "" {
		rf.Group = s.cfg.Group
	}
	return rf, nil
}

func (s *Server) serveRole(w http.ResponseWriter, _ *http.Request) {
	rf, err := s.Role()
	if err != nil {
		rf = servicemgr.RoleFile{Host: s.cfg.Host, Group: s.cfg.Group, Role: RoleUnknown}
		s.logChange(string(RoleUnknown)+": "+err.Error(), func() {
			s.cfg.Logger.Warn("no role: not serving", "err", err)
		})
	} else {
		s.logChange(fmt.Sprintf("%s@%d", rf.Role, rf.Epoch), func() {
			s.cfg.Logger.Info("role", "role", rf.Role, "epoch", rf.Epoch, "group", rf.Group, "host", rf.Host)
		})
	}
	status := http.StatusServiceUnavailable
	if rf.Role == servicemgr.RoleActive {
		status = http.StatusOK
	}
	b, _ := json.Marshal(rf)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// logChange calls log if key differs from the last key seen.
func (s *Server) logChange(key string, log func()) {
	s.mu.Lock()
	changed := s.last != key
	s.last = key
	s.mu.Unlock()
	if changed {
		log()
	}
}

// Run listens on every Config.Listen address and serves until ctx ends,
// then stops gracefully (see Serve).
func (s *Server) Run(ctx context.Context) error {
	if len(s.cfg.Listen) == 0 {
		return errors.New("demo: no listen address")
	}
	lc := net.ListenConfig{Control: freebind}
	var lns []net.Listener
	for _, a := range s.cfg.Listen {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("demo: %w", err)
		}
		lns = append(lns, ln)
	}
	return s.Serve(ctx, lns...)
}

// freebind lets a listener bind an address the host does not hold (yet).
func freebind(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Serve serves on lns until ctx ends, then stops: it stops accepting,
// lets requests in flight finish for up to ShutdownTimeout, closes every
// connection and listener, and returns nil. It returns an error if a
// listener fails first.
func (s *Server) Serve(ctx context.Context, lns ...net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		s.cfg.Logger.Info("listening", "addr", ln.Addr().String(), "state_dir", s.cfg.StateDir)
		go func() { errc <- srv.Serve(ln) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("demo: serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		s.cfg.Logger.Warn("requests still in flight at shutdown: closed", "err", serr)
		srv.Close()
	}
	// Every Serve goroutine returns once Shutdown or Close has run.
	for range len(lns) - boolInt(err != nil) {
		<-errc
	}
	s.cfg.Logger.Info("stopped")
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
