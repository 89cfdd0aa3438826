package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/agent/services"
	"github.com/petrel-edge/petrel/servicemgr"
)

// The agent runs the service-group members its site assigns to its host
// (package agent/services) once it has joined: a long poll of the site's
// desired state feeds the runner, and the runner's reports go back to the
// site (servicemgr has the protocol).

const (
	// servicesWait is how long the site may hold a long poll.
	servicesWait = 25 * time.Second
	// servicesTimeout bounds a long poll: the wait, and time to answer.
	servicesTimeout = servicesWait + 15*time.Second
	// servicesNotServed is how often a site that does not serve services
	// (404) is asked again.
	servicesNotServed = 30 * time.Second
)

// newServices builds the runner of the host's service-group members.
func (a *Agent) newServices() (*services.Runner, error) {
	host, _ := os.Hostname() // until the site names the host
	return services.New(services.Config{StateDir: a.cfg.StateDir, Host: host, Addrs: networkAddrs,
		Platform: a.cfg.Platform, Report: a.reportServices, Logger: a.log.With("component", "services")})
}

// Services is the runner of the host's service-group members.
func (a *Agent) Services() *services.Runner { return a.svc }

// startServices runs the members and the long poll that feeds them until
// stop is called (or ctx ends); stop waits until every member is
// stopped. The agent must have joined.
func (a *Agent) startServices(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	// The long poll outlasts the usual client's timeout; it shares its
	// connections.
	poll := &http.Client{Transport: a.client.Transport, Timeout: servicesTimeout}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := a.svc.Run(ctx); err != nil {
			a.log.Error("the service runner stopped", "err", err)
		}
	})
	wg.Go(func() { a.pollServices(ctx, poll) })
	return func() { cancel(); wg.Wait() }
}

// pollServices long-polls the site for the host's members and applies
// every answer, until ctx ends.
func (a *Agent) pollServices(ctx context.Context, c *http.Client) {
	base := "/v1/agents/" + a.machineID + "/services"
	backoff := newBackoff(500*time.Millisecond, 10*time.Second)
	var version uint64
	have := false                      // version is the one applied last
	failing, notServed := false, false // for logging each change once
	for ctx.Err() == nil {
		path := base + "?boot_id=" + a.bootID
		if have {
			path += "&version=" + strconv.FormatUint(version, 10) + "&wait=" + servicesWait.String()
		}
		t0 := time.Now()
		var got servicemgr.AgentServices
		err := a.doWith(ctx, c, http.MethodGet, path, nil, &got)
		var se *statusError
		switch {
		case err == nil:
			if failing || notServed {
				a.log.Info("the site serves this host's services")
			}
			failing, notServed = false, false
			if !a.svcServed.Swap(true) {
				// Tell the site at once that this host runs members: it
				// places none on a host it has not heard from.
				go func() {
					if err := a.reportServices(ctx, a.svc.Status()); err != nil {
						a.log.Debug("first services report failed", "err", err)
					}
				}()
			}
			backoff.reset()
			a.svc.Apply(got)
			same := have && got.Version == version
			version, have = got.Version, true
			if same && time.Since(t0) < time.Second && !sleep(ctx, jitter(time.Second)) {
				return // a site that does not hold the poll is not asked in a loop
			}
		case ctx.Err() != nil:
			return
		case errors.As(err, &se) && se.status == http.StatusNotFound:
			if !notServed {
				a.log.Info("the site does not serve services; asking again every " + a.svcNotServed.String())
			}
			notServed, have = true, false
			a.svcServed.Store(false)
			if !sleep(ctx, jitter(a.svcNotServed)) {
				return
			}
		default:
			if !failing {
				a.log.Warn("polling the site's services failed; retrying", "err", err)
			} else {
				a.log.Debug("polling the site's services failed", "err", err)
			}
			failing = true
			if !sleep(ctx, backoff.next()) {
				return
			}
		}
	}
}

// reportServices sends the members' status to the site, once the site
// has answered a poll: a site that does not serve services is not sent
// reports it cannot take.
func (a *Agent) reportServices(ctx context.Context, st servicemgr.AgentStatus) error {
	if !a.svcServed.Load() {
		return nil
	}
	st.BootID = a.bootID
	return a.do(ctx, http.MethodPut, "/v1/agents/"+a.machineID+"/services/status", st, nil)
}

// networkAddrs is the host's address on each network: the first IPv4
// address (else the first global IPv6 one) of the interface named after
// it. The kernel lists an interface's own address before those added
// later, floating ones among them.
func networkAddrs() map[string]string {
	out := map[string]string{}
	for _, name := range []string{"mgmt", "cluster"} {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		var v6 string
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsLoopback() {
				continue
			}
			if ipn.IP.To4() != nil {
				out[name] = ipn.IP.String()
				break
			}
			if v6 == "" {
				v6 = ipn.IP.String()
			}
		}
		if out[name] == "" && v6 != "" {
			out[name] = v6
		}
	}
	return out
}
