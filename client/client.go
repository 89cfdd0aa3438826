// Package client is the Go client of Petrel's REST API, used by the petrel
// CLI, the dashboard and central itself. It speaks TLS, trusting a given CA,
// authenticates with a bearer token, decodes the error envelope into *Error
// (which matches the errs kinds with errors.Is), and walks paged lists.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
)

// Config configures a Client.
type Config struct {
	URL     string // base URL, e.g. https://127.0.0.1:8443
	Token   string // API token; empty for unauthenticated calls
	CACert  string // PEM file of the CA to trust; empty: the system roots
	Timeout time.Duration
	// PathPrefix is prepended to every API path; the CLI's --site sets it to
	// /v1/subclouds/NAME/api so central relays the call to the site.
	PathPrefix string
	// HTTPClient overrides the transport entirely (tests).
	HTTPClient *http.Client
}

// Client calls one Petrel API.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("no API URL: pass --url or set PETREL_URL (or run petrel login)")
	}
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("API URL %q: want https://HOST:PORT", cfg.URL)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CACert != "" {
			pem, err := os.ReadFile(cfg.CACert)
			if err != nil {
				return nil, fmt.Errorf("CA certificate: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA certificate %s holds no PEM certificate", cfg.CACert)
			}
			tlsCfg.RootCAs = pool
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		tr.Proxy = nil // lab and site endpoints are local; never route them through a proxy
		tr.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	}
	return &Client{cfg: cfg, base: u, http: hc}, nil
}

// Error is an error answered by the API.
type Error struct {
	Status    int
	Code      string
	Message   string
	RequestID string
	Field     string
}

func (e *Error) Error() string {
	s := e.Message
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Is matches the errs kind of the wire code, so callers write
// errors.Is(err, errs.NotFound) whether the error came from a store or the wire.
func (e *Error) Is(target error) bool {
	k := errs.FromCode(e.Code)
	return k != nil && k == target
}

// Do calls method path with the JSON body in (nil for none) and decodes the
// answer into out (nil to discard; *[]byte for the raw body).
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	if in == nil {
		return c.send(ctx, c.http, method, path, query, nil, 0, "", out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.send(ctx, c.http, method, path, query, bytes.NewReader(b), int64(len(b)), "application/json", out)
}

// Upload streams size bytes of body (an image, say) to method path as
// application/octet-stream and decodes the answer into out as Do does.
// Only ctx bounds it: the client's timeout would cut off a large upload.
func (c *Client) Upload(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	hc := *c.http
	hc.Timeout = 0
	return c.send(ctx, &hc, method, path, nil, body, size, "application/octet-stream", out)
}

// send calls method path with body, of size bytes (sent as its
// Content-Length), and decodes the answer into out.
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, query url.Values, body io.Reader, size int64, contentType string, out any) error {
	u := *c.base
	u.Path = c.base.Path + c.cfg.PathPrefix + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if body != nil && size > 0 {
		req.ContentLength = size
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return reachError(c.cfg.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer from %s: %w", c.cfg.URL, err)
	}
	if resp.StatusCode >= 400 {
		return decodeError(resp.StatusCode, raw)
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = raw
		return nil
	default:
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decoding the answer to %s %s: %w", method, path, err)
		}
		return nil
	}
}

func decodeError(status int, raw []byte) error {
	var env struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
			Field     string `json:"field"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &env) != nil || env.Error.Code == "" {
		return &Error{Status: status, Code: "internal", Message: fmt.Sprintf("HTTP %d: %s", status, strings.TrimSpace(string(raw)))}
	}
	e := env.Error
	return &Error{Status: status, Code: e.Code, Message: e.Message, RequestID: e.RequestID, Field: e.Field}
}

func reachError(base string, err error) error {
	var uae x509.UnknownAuthorityError
	var cie x509.CertificateInvalidError
	if errors.As(err, &uae) || errors.As(err, &cie) {
		return fmt.Errorf("cannot verify %s's certificate: pass its CA with --ca-cert or PETREL_CA_CERT: %w", base, err)
	}
	return fmt.Errorf("cannot reach %s: %w", base, err)
}

// Page is one page of a list.
type Page struct {
	Items         []json.RawMessage `json:"items"`
	NextPageToken string            `json:"next_page_token"`
}

// List fetches a list, following page tokens until limit items (0: all).
// It returns the items in the list envelope's shape, as one page.
func (c *Client) List(ctx context.Context, path string, query url.Values, limit int) (Page, error) {
	query = cloneValues(query) // page tokens go into a copy, never the caller's values
	var all Page
	all.Items = []json.RawMessage{}
	for {
		q := cloneValues(query)
		if limit > 0 {
			q.Set("limit", fmt.Sprint(min(limit-len(all.Items), 1000)))
		}
		var p Page
		if err := c.Do(ctx, http.MethodGet, path, q, nil, &p); err != nil {
			return Page{}, err
		}
		all.Items = append(all.Items, p.Items...)
		if p.NextPageToken == "" || (limit > 0 && len(all.Items) >= limit) {
			if limit > 0 && len(all.Items) >= limit {
				all.NextPageToken = p.NextPageToken
			}
			return all, nil
		}
		query.Set("page_token", p.NextPageToken)
	}
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}
