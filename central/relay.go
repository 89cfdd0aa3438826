package central

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// relayHost is the host name a relayed request carries: one per site, so
// the transport's connection pool never hands one site's stream to another.
func relayHost(site string) string { return site + ".site.petrel" }

// relayTransport opens each connection as a stream of the site's dial-home
// session: central never dials a site.
func (c *Central) relayTransport() *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			site, ok := strings.CutSuffix(host, ".site.petrel")
			if !ok {
				return nil, errs.Wrapf(errs.Invalid, "not a relay address: %s", addr)
			}
			sess := c.links.get(site)
			if sess == nil {
				return nil, errs.Wrapf(errs.Unavailable, "site %s is not connected", site)
			}
			return sess.Open()
		},
		// A stream is cheap to open (no handshake: the link's session is
		// up), while an idle one holds two goroutines and buffers: at
		// 10,000 sites, minutes-long idle pools held thousands.
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       5 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
}

// hop-by-hop and credential headers never cross the relay.
var strippedHeaders = []string{"Authorization", "Cookie", "X-Auth-Token", auth.AssertionHeader,
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// relayGuard authenticates the operator at central and checks the path:
// the site checks the role the assertion carries.
func (c *Central) relayGuard(r *http.Request) (*http.Request, error) {
	r2, err := c.shell.Auth.Require(auth.Reader)(r)
	if err != nil {
		return nil, err
	}
	site := rest.Var(r, "name")
	if _, err := c.Subclouds.Subcloud(r.Context(), site); err != nil {
		return nil, err
	}
	if _, err := relayPath(r, site); err != nil {
		return nil, err
	}
	return r2, nil
}

// relayPath returns the site path a relayed request names, refusing any
// that tries to leave /v1/subclouds/NAME/api/ (dot segments, encoded
// slashes, absolute URLs).
func relayPath(r *http.Request, site string) (string, error) {
	raw := r.URL.EscapedPath()
	prefix := "/v1/subclouds/" + url.PathEscape(site) + "/api"
	rest, ok := strings.CutPrefix(raw, prefix)
	if !ok || !strings.HasPrefix(rest, "/") {
		return "", errs.Field("path", "not a relay path")
	}
	lower := strings.ToLower(rest)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") ||
		strings.Contains(rest, "//") || strings.Contains(rest, `\`) {
		return "", errs.Field("path", "encoded separators and empty segments are not relayed")
	}
	for _, seg := range strings.Split(rest, "/") {
		if seg == "." || seg == ".." {
			return "", errs.Field("path", "dot segments are not relayed")
		}
	}
	if !strings.HasPrefix(rest, "/") {
		return "", errs.Field("path", "must start with /")
	}
	return rest, nil
}

// relay forwards an authenticated operator's call to the named site over
// its dial-home session, with a short-lived assertion instead of the
// operator's credentials.
func (c *Central) relay() http.Handler {
	tr := c.relayTransport()
	return &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			site := rest.Var(pr.In, "name")
			raw, _ := relayPath(pr.In, site) // checked by the guard
			p, _ := url.PathUnescape(raw)
			pr.Out.URL = &url.URL{Scheme: "http", Host: relayHost(site), Path: p, RawPath: raw, RawQuery: pr.In.URL.RawQuery}
			pr.Out.Host = relayHost(site)
			for _, h := range strippedHeaders {
				pr.Out.Header.Del(h)
			}
			principal, _ := auth.PrincipalFrom(pr.In.Context())
			id := rest.RequestID(pr.In.Context())
			if a, err := c.signer.Sign(principal, site, pr.In.Method, raw, id, 30*time.Second); err == nil {
				pr.Out.Header.Set(auth.AssertionHeader, a)
			}
			pr.Out.Header.Set("X-Request-Id", id)
			pr.Out.Header.Set("X-Forwarded-For", strings.Split(pr.In.RemoteAddr, ":")[0])
		},
		// A site's answer is served from central's origin: it may not set
		// cookies there nor run script (a compromised site must not reach
		// the dashboard's session).
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del("Set-Cookie")
			resp.Header.Set("Content-Security-Policy", "sandbox; default-src 'none'")
			resp.Header.Set("X-Content-Type-Options", "nosniff")
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "text/plain") &&
				!strings.HasPrefix(ct, "application/yaml") && resp.StatusCode != http.StatusNoContent {
				resp.Header.Set("Content-Disposition", "attachment")
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			id := rest.RequestID(r.Context())
			c.log.Warn("relay failed", "site", rest.Var(r, "name"), "request_id", id, "err", err)
			rest.WriteJSON(w, http.StatusServiceUnavailable, rest.ErrorBody{Error: rest.ErrorDetail{Code: "unavailable",
				Message: "site " + rest.Var(r, "name") + " is not reachable now", RequestID: id}})
		},
	}
}
