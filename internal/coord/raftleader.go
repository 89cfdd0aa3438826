package coord

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// PinRaftLeader moves the cluster's raft leadership to the member serving
// at local (this process's own member), if another member has it: the
// leader-only work of a site controller then never waits for a raft
// election when another member's host dies (only when its own does, and
// then the controller is gone too). The transfer is asked of the current
// leader, through a short-lived client of cfg's identity. It returns
// whether it moved.
func PinRaftLeader(ctx context.Context, cfg ClientConfig, local string) (bool, error) {
	c, err := NewClient(ClientConfig{Endpoints: []string{local}, TLS: cfg.TLS, Logger: cfg.Logger, LogLevel: cfg.LogLevel})
	if err != nil {
		return false, err
	}
	defer c.Close()
	ep := local
	if !strings.Contains(ep, "://") {
		ep = "https://" + ep
	}
	st, err := c.etcd.Status(ctx, ep)
	if err != nil {
		return false, fmt.Errorf("coord: status of %s: %w", local, err)
	}
	self := st.Header.MemberId
	if st.Leader == self || st.Leader == 0 {
		return false, nil
	}
	members, err := c.etcd.MemberList(ctx)
	if err != nil {
		return false, fmt.Errorf("coord: member list: %w", err)
	}
	var leaderURLs []string
	for _, m := range members.Members {
		if m.ID == st.Leader {
			leaderURLs = m.ClientURLs
		}
	}
	if len(leaderURLs) == 0 {
		return false, fmt.Errorf("coord: the raft leader %x has no client URL", st.Leader)
	}
	var eps []string
	for _, u := range leaderURLs {
		if p, err := url.Parse(u); err == nil && p.Host != "" {
			eps = append(eps, p.Host)
		}
	}
	lc, err := NewClient(ClientConfig{Endpoints: eps, TLS: cfg.TLS, Logger: cfg.Logger, LogLevel: cfg.LogLevel})
	if err != nil {
		return false, err
	}
	defer lc.Close()
	if _, err := lc.etcd.MoveLeader(clientv3.WithRequireLeader(ctx), self); err != nil {
		return false, fmt.Errorf("coord: move the raft leader to %x: %w", self, err)
	}
	return true, nil
}
