// Package rest is the HTTP boundary shared by Petrel's daemons: handlers that
// return their status, one table from error kinds to HTTP statuses and stable
// wire codes, the error and list envelopes of the API contract, request IDs,
// per-route metrics and an audit hook for every mutating call.
//
// Every route is registered with an operation ID (the OpenAPI operationId, the
// metrics label and the audit action) and a Guard; a route without a guard must
// be declared public explicitly, so an unauthenticated route is never an accident.
package rest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/internal/errs"
)

// Handler serves one API call. It returns the HTTP status, the body to encode
// as JSON (nil for none; a Raw for other media types) and an error. When the
// error is non-nil, status and body are ignored and the error envelope is sent.
type Handler func(r *http.Request) (status int, body any, err error)

// Guard authenticates and authorises a request. It returns the request to pass
// on (usually carrying the caller's identity in its context) or an error of kind
// errs.Unauthenticated or errs.Forbidden.
type Guard func(r *http.Request) (*http.Request, error)

// Raw is a non-JSON response body.
type Raw struct {
	ContentType string
	Body        []byte
}

// Route describes one registered route.
type Route struct {
	Op     string // operation ID: OpenAPI operationId, metrics label, audit action
	Method string
	Path   string // gorilla/mux template, e.g. /v1/hosts/{id}
	Public bool   // no guard: reachable without credentials
	// MaxBody caps the request body; zero: the server's MaxBody.
	MaxBody int64
	// Dialect names the foreign API the route speaks ("" for Petrel's own);
	// such routes are not in Petrel's OpenAPI document.
	Dialect string
	dialect *Dialect
}

// Dialect is another API's protocol spoken on some routes (the
// OpenStack-compatible API): its error answers take the dialect's shape.
// Its routes are guarded, audited, counted and logged as Petrel's own.
type Dialect struct {
	Name string
	// Status, when set, may choose an error's HTTP status (0: Classify's).
	Status func(err error) int
	// WriteError writes an error answer; status is the one chosen and
	// message what the client may see (see PublicMessage).
	WriteError func(w http.ResponseWriter, r *http.Request, status int, message string, err error)
}

// Mutating reports whether calls to the route change state (and are audited).
func (rt Route) Mutating() bool {
	return rt.Method != http.MethodGet && rt.Method != http.MethodHead
}

// Config configures a Server.
type Config struct {
	Logger   *slog.Logger          // required
	Registry prometheus.Registerer // required: per-route request metrics go here
	// Audit, when set, is called after every call to a mutating route with the
	// final status and error, including calls refused by the guard.
	Audit func(r *http.Request, rt Route, status int, err error)
	// MaxBody caps request bodies; zero means 1 MiB.
	MaxBody int64
}

// Server routes API calls. Build it with New, register routes, then serve it
// as an http.Handler.
type Server struct {
	cfg      Config
	router   *mux.Router
	routes   []Route
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New returns a Server with no routes.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil || cfg.Registry == nil {
		return nil, errors.New("rest: Logger and Registry are required")
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 1 << 20
	}
	s := &Server{
		cfg: cfg,
		// Paths are not cleaned and redirected: a relay path with dot
		// segments must reach its guard and be refused, not be redirected.
		router: mux.NewRouter().SkipClean(true),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_http_requests_total",
			Help: "API requests by operation, method and status code.",
		}, []string{"op", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "petrel_http_request_duration_seconds",
			Help:    "API request latency by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
	}
	for _, c := range []prometheus.Collector{s.requests, s.latency} {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("rest: register metrics: %w", err)
		}
	}
	notFound := Route{Op: "notFound", Public: true}
	s.router.NotFoundHandler = s.wrap(notFound, nil, func(r *http.Request) (int, any, error) {
		return 0, nil, errs.Wrapf(errs.NotFound, "no such resource: %s", r.URL.Path)
	})
	s.router.MethodNotAllowedHandler = s.wrap(notFound, nil, func(r *http.Request) (int, any, error) {
		return 0, nil, errMethodNotAllowed
	})
	return s, nil
}

var errMethodNotAllowed = errors.New("method not allowed")

// Handle registers an authenticated route. It panics on a nil guard or a
// duplicate operation ID: both are programming errors.
func (s *Server) Handle(op, method, path string, g Guard, h Handler) {
	if g == nil {
		panic("rest: route " + op + " has no guard; use HandlePublic")
	}
	s.add(Route{Op: op, Method: method, Path: path}, g, h)
}

// HandleStream registers an authenticated route whose request body may be
// up to maxBody bytes (an upload); the handler reads r.Body as a stream.
func (s *Server) HandleStream(op, method, path string, maxBody int64, g Guard, h Handler) {
	if g == nil {
		panic("rest: route " + op + " has no guard")
	}
	s.add(Route{Op: op, Method: method, Path: path, MaxBody: maxBody}, g, h)
}

// HandlePublicHTTP registers a public route served by a plain http.Handler
// (metrics exposition, for example); it still gets a request id and metrics.
func (s *Server) HandlePublicHTTP(op, method, path string, h http.Handler) {
	s.add(Route{Op: op, Method: method, Path: path, Public: true}, nil, func(r *http.Request) (int, any, error) {
		return 0, passThrough{h}, nil
	})
}

// HandleHTTP registers a guarded route served by a plain http.Handler (a
// reverse proxy, for example). Its audit record carries the status the
// handler wrote.
func (s *Server) HandleHTTP(op, method, path string, g Guard, h http.Handler) {
	if g == nil {
		panic("rest: route " + op + " has no guard; use HandlePublicHTTP")
	}
	s.add(Route{Op: op, Method: method, Path: path}, g, func(r *http.Request) (int, any, error) {
		return 0, passThrough{h}, nil
	})
}

// HandleHTTPStream is HandleHTTP for a route whose request body may be up
// to maxBody bytes (a relay that carries uploads, for example).
func (s *Server) HandleHTTPStream(op, method, path string, maxBody int64, g Guard, h http.Handler) {
	if g == nil {
		panic("rest: route " + op + " has no guard; use HandlePublicHTTP")
	}
	s.add(Route{Op: op, Method: method, Path: path, MaxBody: maxBody}, g, func(r *http.Request) (int, any, error) {
		return 0, passThrough{h}, nil
	})
}

// passThrough is a body that serves the response itself.
type passThrough struct{ h http.Handler }

// HandleDialect registers a route that speaks dialect d; a nil guard
// makes it public.
func (s *Server) HandleDialect(d *Dialect, op, method, path string, g Guard, h Handler) {
	if d == nil || d.Name == "" || d.WriteError == nil {
		panic("rest: route " + op + " needs a named dialect with an error writer")
	}
	s.add(Route{Op: op, Method: method, Path: path, Public: g == nil, Dialect: d.Name, dialect: d}, g, h)
}

// HandlePublic registers a route that needs no credentials.
func (s *Server) HandlePublic(op, method, path string, h Handler) {
	s.add(Route{Op: op, Method: method, Path: path, Public: true}, nil, h)
}

func (s *Server) add(rt Route, g Guard, h Handler) {
	for _, old := range s.routes {
		if old.Op == rt.Op {
			panic("rest: duplicate operation " + rt.Op)
		}
	}
	s.routes = append(s.routes, rt)
	s.router.Handle(rt.Path, s.wrap(rt, g, h)).Methods(rt.Method)
}

// Routes returns every registered route in registration order.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// Var returns the path variable name of the matched route.
func Var(r *http.Request, name string) string { return mux.Vars(r)[name] }

func (s *Server) wrap(rt Route, g Guard, h Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := requestID(r)
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, &requestState{id: id, notes: map[string]string{}}))
		maxBody := s.cfg.MaxBody
		if rt.MaxBody > 0 {
			maxBody = rt.MaxBody
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)

		r, status, body, err := s.serve(rt, g, h, r)
		if err != nil {
			status = s.classifyAndLog(r, rt, err)
		}
		if st, ok := r.Context().Value(ctxKey{}).(*requestState); ok && st.header != nil {
			for k, v := range st.header {
				w.Header()[k] = v
			}
		}
		pt, streamed := body.(passThrough)
		if streamed && err == nil {
			// The handler writes the response itself; audit what it wrote.
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			pt.h.ServeHTTP(sw, r)
			status = sw.status
		}
		// Otherwise the audit record is written before the caller hears the outcome.
		if rt.Mutating() && s.cfg.Audit != nil && rt.Method != "" {
			s.cfg.Audit(r, rt, status, err)
		}
		switch {
		case err != nil && rt.dialect != nil:
			rt.dialect.WriteError(w, r, status, PublicMessage(r.Context(), status, err), err)
		case err != nil:
			s.writeError(w, r, status, err)
		case !streamed:
			writeBody(w, status, body)
		}
		s.requests.WithLabelValues(rt.Op, r.Method, strconv.Itoa(status)).Inc()
		s.latency.WithLabelValues(rt.Op).Observe(time.Since(start).Seconds())
		s.cfg.Logger.Debug("request", "op", rt.Op, "method", r.Method, "path", r.URL.Path,
			"status", status, "request_id", id, "duration_ms", time.Since(start).Milliseconds())
	})
}

// serve runs guard and handler, turning a panic into an internal error.
// It returns the request as the guard passed it on, so the audit hook sees the
// caller's identity.
func (s *Server) serve(rt Route, g Guard, h Handler, r *http.Request) (req *http.Request, status int, body any, err error) {
	req = r
	defer func() {
		if p := recover(); p != nil {
			status, body = 0, nil
			err = fmt.Errorf("panic in %s: %v\n%s", rt.Op, p, debug.Stack())
		}
	}()
	if g != nil {
		if req, err = g(r); err != nil {
			return r, 0, nil, err
		}
	}
	status, body, err = h(req)
	if err == nil && status == 0 {
		status = http.StatusOK
	}
	return req, status, body, err
}

// Classify maps an error to its HTTP status and wire code: the one table.
func Classify(err error) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	case errors.As(err, &mbe), errors.Is(err, errs.TooLarge):
		return http.StatusRequestEntityTooLarge, "payload_too_large"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "unavailable"
	}
	code := errs.Code(err)
	switch code {
	case "not_found":
		return http.StatusNotFound, code
	case "invalid_argument":
		return http.StatusBadRequest, code
	case "conflict", "invalid_transition":
		return http.StatusConflict, code
	case "unauthenticated":
		return http.StatusUnauthorized, code
	case "permission_denied":
		return http.StatusForbidden, code
	case "not_leader", "unavailable":
		return http.StatusServiceUnavailable, code
	case "payload_too_large":
		return http.StatusRequestEntityTooLarge, code
	case "rate_limited":
		return http.StatusTooManyRequests, code
	}
	return http.StatusInternalServerError, "internal"
}

// ErrorBody is the error envelope of the API contract.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the content of the error envelope.
type ErrorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	Field     string `json:"field,omitempty"`
}

// classifyAndLog returns the status for err, logging internal errors with the
// request id (their detail never reaches the client).
func (s *Server) classifyAndLog(r *http.Request, rt Route, err error) int {
	status, _ := Classify(err)
	if rt.dialect != nil && rt.dialect.Status != nil {
		if st := rt.dialect.Status(err); st != 0 {
			status = st
		}
	}
	if status >= 500 {
		s.cfg.Logger.Error("request failed", "op", rt.Op, "method", r.Method, "path", r.URL.Path,
			"request_id", RequestID(r.Context()), "status", status, "err", err)
	}
	return status
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status int, err error) {
	_, code := Classify(err)
	id := RequestID(r.Context())
	d := ErrorDetail{Code: code, Message: PublicMessage(r.Context(), status, err), RequestID: id}
	var fe *errs.FieldError
	if errors.As(err, &fe) {
		d.Field = fe.Field
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="petrel"`)
	}
	writeBody(w, status, ErrorBody{Error: d})
}

// PublicMessage is what a client may read of an error answered with
// status: the error's text, except for server errors, whose detail goes
// only to the log (under the request id).
func PublicMessage(ctx context.Context, status int, err error) string {
	id := RequestID(ctx)
	switch {
	case status == http.StatusServiceUnavailable:
		return "service unavailable, retry later (request " + id + ")"
	case status >= 500:
		return "internal error (request " + id + ")"
	}
	return err.Error()
}

func writeBody(w http.ResponseWriter, status int, body any) {
	switch b := body.(type) {
	case nil:
		w.WriteHeader(status)
	case Raw:
		w.Header().Set("Content-Type", b.ContentType)
		w.WriteHeader(status)
		_, _ = w.Write(b.Body)
	default:
		WriteJSON(w, status, body)
	}
}

type ctxKey struct{}

type requestState struct {
	id     string
	mu     sync.Mutex
	notes  map[string]string
	header http.Header // set by handlers with SetHeader
}

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

// requestID takes a well-formed X-Request-Id from the caller (a relay passes
// its own) or makes a new one.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); requestIDPattern.MatchString(id) {
		return id
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RequestID returns the request ID of a request served by a Server.
func RequestID(ctx context.Context) string {
	if st, ok := ctx.Value(ctxKey{}).(*requestState); ok {
		return st.id
	}
	return ""
}

// Annotate records a key/value about the request for the audit hook (for
// example the user a login attempt named). It is a no-op outside a Server.
func Annotate(ctx context.Context, key, value string) {
	if st, ok := ctx.Value(ctxKey{}).(*requestState); ok {
		st.mu.Lock()
		st.notes[key] = value
		st.mu.Unlock()
	}
}

// SetHeader sets a header of the response to the request being served (a
// handler's way to add headers to its answer, e.g. a Keystone token's
// X-Subject-Token). It is a no-op outside a Server, and for handlers that
// write their response themselves.
func SetHeader(ctx context.Context, key, value string) {
	if st, ok := ctx.Value(ctxKey{}).(*requestState); ok {
		st.mu.Lock()
		if st.header == nil {
			st.header = http.Header{}
		}
		st.header.Set(key, value)
		st.mu.Unlock()
	}
}

// Annotation returns a value recorded with Annotate.
func Annotation(ctx context.Context, key string) string {
	if st, ok := ctx.Value(ctxKey{}).(*requestState); ok {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.notes[key]
	}
	return ""
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
