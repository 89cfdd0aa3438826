package subcloud

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/inventory"
)

// resourceAlarmIDs are the alarms a host's agent asserts; the site never
// touches a host's other alarms on the agent's word.
var resourceAlarmIDs = [...]string{inventory.AlarmCPU, inventory.AlarmMemory, inventory.AlarmFilesystem}

// hostLocks serialises, per host, the handling of its agent's reports
// with the changes that re-key or drop its alarms (rename, delete), so
// that the alarms applied are always those of the newest stored report.
type hostLocks [64]chanMutex

// chanMutex is a mutex whose Lock gives up when ctx ends.
type chanMutex chan struct{}

func newHostLocks() *hostLocks {
	var l hostLocks
	for i := range l {
		l[i] = make(chanMutex, 1)
	}
	return &l
}

// lock locks host uuid's stripe and returns its unlock, or fails when ctx
// ends first.
func (l *hostLocks) lock(ctx context.Context, uuid string) (func(), error) {
	h := fnv.New32a()
	h.Write([]byte(uuid))
	m := l[h.Sum32()%uint32(len(l))]
	select {
	case m <- struct{}{}:
		return func() { <-m }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// applyResourceAlarms makes the site's active resource alarms of host h —
// 100.101, 100.103 and 100.104 on host=NAME and its sub-entities — those
// its agent asserted in its last stored report (h.ResourceAlarms): it
// raises each asserted one (a no-op when it is active and unchanged) and
// clears the others. When the host was renamed from oldName, its resource
// alarms on the old name are cleared too, unless another host has that
// name now. The caller holds the host's lock.
func (s *Subcloud) applyResourceAlarms(ctx context.Context, h inventory.Host, oldName string) error {
	want := make(map[string]bool, len(h.ResourceAlarms))
	for _, a := range h.ResourceAlarms {
		want[a.AlarmID+" "+a.Entity(h.Name)] = true
	}
	names := []string{h.Name}
	if oldName != "" && oldName != h.Name {
		_, err := s.Hosts.Host(ctx, oldName)
		switch {
		case errors.Is(err, inventory.ErrHostNotFound):
			names = append(names, oldName)
		case err != nil:
			return err
		}
	}
	alarms := s.shell.Alarms
	for _, name := range names {
		active, err := activeResourceAlarms(ctx, alarms.Store(), name)
		if err != nil {
			return err
		}
		for _, a := range active {
			if want[a.AlarmID+" "+a.EntityInstanceID] {
				continue
			}
			if _, err := alarms.Clear(ctx, a.AlarmID, a.EntityInstanceID); err != nil {
				return fmt.Errorf("clear %s on %s: %w", a.AlarmID, a.EntityInstanceID, err)
			}
			s.log.Info("resource alarm cleared", "alarm_id", a.AlarmID, "entity", a.EntityInstanceID, "machine_id", h.UUID)
		}
	}
	for _, a := range h.ResourceAlarms {
		_, changed, err := alarms.Raise(ctx, a.AlarmID, a.Entity(h.Name), a.Fields)
		if err != nil {
			return fmt.Errorf("raise %s on %s: %w", a.AlarmID, a.Entity(h.Name), err)
		}
		if changed {
			s.log.Info("resource alarm raised", "alarm_id", a.AlarmID, "entity", a.Entity(h.Name), "machine_id", h.UUID)
		}
	}
	return nil
}

// activeResourceAlarms lists the active resource alarms on host=name and
// its sub-entities (not on host=name2 and the like).
func activeResourceAlarms(ctx context.Context, st faultmgr.AlarmStore, name string) ([]faultmgr.Alarm, error) {
	host := "host=" + name
	var out []faultmgr.Alarm
	for _, id := range resourceAlarmIDs {
		opts := page.Options{Limit: 500, Filters: map[string]string{"alarm_id": id, "entity_instance_id": host}}
		for {
			as, next, err := st.Alarms(ctx, opts)
			if err != nil {
				return nil, err
			}
			for _, a := range as {
				if a.EntityInstanceID == host || strings.HasPrefix(a.EntityInstanceID, host+".") {
					out = append(out, a)
				}
			}
			if next == "" {
				break
			}
			opts.After = next
		}
	}
	return out, nil
}
