package libvirt

import (
	"context"
	"fmt"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/petrel-edge/petrel/compute"
)

// Events delivers the daemon's domain lifecycle events (libvirt's
// VIR_DOMAIN_EVENT_ID_LIFECYCLE) as run-state changes, in the order the
// daemon sends them. Definition changes (defined, undefined) are not run
// state changes and are left out. The channel is closed once ctx ends or
// the connection is lost; a consumer that stops reading before then holds
// up the delivery of later events, never the connection (go-libvirt queues
// them).
func (d *Driver) Events(ctx context.Context) (<-chan compute.DomainEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	src, err := d.l.LifecycleEvents(ctx)
	if err != nil {
		return nil, fmt.Errorf("libvirt: lifecycle events: %w", err)
	}
	out := make(chan compute.DomainEvent)
	go func() {
		defer close(out)
		// go-libvirt's goroutine sends on src without watching ctx: drain
		// src so that it sees ctx end, deregisters and closes src.
		defer func() {
			for range src {
			}
		}()
		for {
			select {
			case m, ok := <-src:
				if !ok {
					return // connection lost
				}
				ev, ok := eventOf(m)
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// eventOf maps a lifecycle event to the state the domain is in after it,
// with libvirt's detail in lower case ("booted", "destroyed", …). ok is
// false for events that are not run-state changes.
func eventOf(m golibvirt.DomainEventLifecycleMsg) (ev compute.DomainEvent, ok bool) {
	ev.ID = uuidString(m.Dom.UUID)
	detail := func(names ...string) string {
		if m.Detail >= 0 && int(m.Detail) < len(names) {
			return names[m.Detail]
		}
		return fmt.Sprintf("detail-%d", m.Detail)
	}
	// The detail names follow libvirt-domain.h's virDomainEvent*DetailType.
	switch golibvirt.DomainEventType(m.Event) {
	case golibvirt.DomainEventStarted:
		ev.State, ev.Detail = compute.StateRunning,
			detail("booted", "migrated", "restored", "from-snapshot", "wakeup", "recreated")
	case golibvirt.DomainEventSuspended:
		ev.State, ev.Detail = compute.StatePaused,
			detail("paused", "migrated", "io-error", "watchdog", "restored", "from-snapshot", "api-error",
				"postcopy", "postcopy-failed")
	case golibvirt.DomainEventResumed:
		ev.State, ev.Detail = compute.StateRunning,
			detail("unpaused", "migrated", "from-snapshot", "postcopy", "postcopy-failed")
	case golibvirt.DomainEventStopped:
		ev.State, ev.Detail = compute.StateShutoff,
			detail("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from-snapshot", "recreated")
	case golibvirt.DomainEventShutdown:
		ev.State, ev.Detail = compute.StateShuttingDown, detail("finished", "guest", "host")
	case golibvirt.DomainEventPmsuspended:
		ev.State, ev.Detail = compute.StateSuspended, detail("memory", "disk")
	case golibvirt.DomainEventCrashed:
		ev.State, ev.Detail = compute.StateCrashed, detail("panicked", "crashloaded")
	default: // defined, undefined, and types newer than this code
		return compute.DomainEvent{}, false
	}
	return ev, true
}
