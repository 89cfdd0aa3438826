package agent

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/hostmgr/heartbeat"
	"github.com/petrel-edge/petrel/inventory"
)

// pulses answers the site's heartbeat on every network, as the site's
// report acknowledgements configure it (key and port); it restarts when
// they change.
type pulses struct {
	cfg  inventory.HeartbeatConfig
	stop func()
}

// configure starts answering with cfg, replacing what ran before; nil
// stops answering.
func (a *Agent) configureHeartbeat(ctx context.Context, cfg *inventory.HeartbeatConfig) error {
	if cfg != nil && a.hb.stop != nil && a.hb.cfg == *cfg {
		return nil
	}
	if a.hb.stop != nil {
		a.hb.stop()
		a.hb = pulses{}
	}
	if cfg == nil {
		return nil
	}
	key, err := base64.StdEncoding.DecodeString(cfg.Key)
	if err != nil || cfg.Port <= 0 || cfg.Port > 65535 {
		return fmt.Errorf("agent: the site's heartbeat configuration is malformed")
	}
	host, err := uuid.Parse(a.machineID)
	if err != nil {
		return fmt.Errorf("agent: machine id %q is not a UUID: %w", a.machineID, err)
	}
	r, err := heartbeat.NewResponder(heartbeat.ResponderConfig{Host: host, Key: key, Logger: a.log,
		Listen: map[heartbeat.Network]netip.AddrPort{heartbeat.AnyNetwork: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(cfg.Port))}})
	if err != nil {
		return fmt.Errorf("agent: heartbeat: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(rctx) }()
	a.hb = pulses{cfg: *cfg, stop: func() { cancel(); <-done }}
	a.log.Info("answering the site's heartbeat", "port", cfg.Port)
	return nil
}
