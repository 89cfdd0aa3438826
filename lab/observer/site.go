package observer

import (
	"fmt"
	"net"
	"strconv"

	"github.com/petrel-edge/petrel/lab"
)

// SiteTargets are the members to watch at a lab site: every host's
// service at port on its cluster address, each dialed from the host's own
// namespace.
func SiteTargets(site lab.SiteEntry, port int) ([]Target, error) {
	var out []Target
	for _, h := range site.Hosts {
		addr := h.Addresses["cluster"]
		if addr == "" || h.Netns == "" {
			return nil, fmt.Errorf("observer: lab host %s/%s has no netns or cluster address", site.Name, h.Name)
		}
		out = append(out, Target{Host: h.Name, Netns: h.Netns, URL: "http://" + net.JoinHostPort(addr, strconv.Itoa(port)) + "/"})
	}
	return out, nil
}
