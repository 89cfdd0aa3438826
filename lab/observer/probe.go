package observer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/lab/hostnet"
	"github.com/petrel-edge/petrel/servicemgr"
)

// maxBody bounds what is read of an answer.
const maxBody = 4 << 10

// newClient is an HTTP client whose connections are opened inside network
// namespace ns. It keeps no idle connection: a socket left in a host's
// namespace would outlive the host's power-off (and keep a deleted
// namespace alive).
func newClient(ns string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return hostnet.DialIn(ctx, ns, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetch asks member t for its role with GET, within ctx's deadline.
func (o *Observer) fetch(ctx context.Context, t Target) Answer {
	return fetchWith(ctx, o.clients[t.Host], t.URL)
}

func fetchWith(ctx context.Context, c *http.Client, url string) Answer {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Answer{Err: err.Error()}
	}
	resp, err := c.Do(req)
	if err != nil {
		return Answer{Err: err.Error(), Latency: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	a := Answer{Status: resp.StatusCode, Latency: time.Since(start)}
	if err != nil {
		// The status line came: the member answered, though not all of it.
		a.Err = fmt.Sprintf("read body: %v", err)
		return a
	}
	var rf servicemgr.RoleFile
	if err := json.Unmarshal(body, &rf); err != nil {
		a.Err = fmt.Sprintf("body: %v", err)
		return a
	}
	a.Role, a.Group, a.Epoch = rf.Role, rf.Group, rf.Epoch
	return a
}

// ifaceAddrs is what is read of `ip -j addr show`.
type ifaceAddrs struct {
	Flags    []string `json:"flags"`
	AddrInfo []struct {
		Local string `json:"local"`
	} `json:"addr_info"`
}

// listAddrs lists every address of every interface of namespace ns.
func listAddrs(ctx context.Context, ns string) ([]netip.Addr, error) {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-j", "addr", "show")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("ip -n %s addr: %s: %w", ns, msg, err)
		}
		return nil, fmt.Errorf("ip -n %s addr: %w", ns, err)
	}
	return parseAddrs(out)
}

func parseAddrs(out []byte) ([]netip.Addr, error) {
	var ifs []ifaceAddrs
	if err := json.Unmarshal(out, &ifs); err != nil {
		return nil, fmt.Errorf("ip addr: parse output: %w", err)
	}
	var addrs []netip.Addr
	for _, i := range ifs {
		// Only a link that is up holds its addresses: a powered-off lab
		// host keeps its configuration on links that are down (as a
		// dead machine's disk keeps its), until its agent releases them
		// at boot.
		if !slices.Contains(i.Flags, "UP") || !slices.Contains(i.Flags, "LOWER_UP") {
			continue
		}
		for _, a := range i.AddrInfo {
			if addr, err := netip.ParseAddr(a.Local); err == nil {
				addrs = append(addrs, addr)
			}
		}
	}
	return addrs, nil
}
