package compute

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
)

// Live-migration convergence: the downtime limit starts at
// FirstMaxDowntime and doubles, up to LastMaxDowntime, each time a
// DowntimeStep passes with the remaining memory not shrinking. QEMU's
// auto-converge throttles a guest that still dirties memory faster than
// it is copied. A migration still running at ManagerConfig.MigrationTimeout
// is aborted: the guest stays on the source.
const (
	FirstMaxDowntime = 50 * time.Millisecond
	LastMaxDowntime  = 800 * time.Millisecond
	DowntimeStep     = 2 * time.Second
	progressEvery    = 250 * time.Millisecond
)

// AlarmMigrationFailed is raised on a server whose live migration failed.
const AlarmMigrationFailed = "700.003"

// startMigration checks a migrate request and records the server as
// migrating to the chosen host (the scheduler's filters apply to it,
// anti-affinity included; the destination is claimed from now on).
func (m *Manager) startMigration(ctx context.Context, sv Server, a ServerAction) (Server, error) {
	if _, admin := scope(ctx); !admin {
		return Server{}, errs.New(errs.Forbidden, "only an admin migrates servers")
	}
	m.placeMu.Lock()
	defer m.placeMu.Unlock()
	hosts, err := m.cfg.Hosts.HypervisorHosts(ctx)
	if err != nil {
		return Server{}, err
	}
	all, err := m.cfg.Store.AllServers(ctx)
	if err != nil {
		return Server{}, err
	}
	if a.Host == sv.Host {
		return Server{}, errs.Field("host", "server %s is on %s already", sv.Name, sv.Host)
	}
	cands := m.candidates(hosts, sv.Host)
	var group *ServerGroup
	if sv.Group != "" {
		g, err := m.cfg.Store.ServerGroup(ctx, sv.Group, "")
		if err != nil {
			return Server{}, err
		}
		group = &g
	}
	others := make([]Server, 0, len(all))
	for _, o := range all {
		if o.ID != sv.ID {
			others = append(others, o)
		}
	}
	if group != nil && group.Policy == Affinity {
		// The member moving keeps no claim on the group's host.
		return Server{}, fmt.Errorf("%w: server %s is in affinity group %s: its members move together, not one by one", ErrServerState, sv.Name, group.Name)
	}
	dest, err := Schedule(m.cfg.Scheduler, ScheduleRequest{Flavor: sv.Flavor, Host: a.Host, Group: group}, cands, others)
	if err != nil {
		return Server{}, fmt.Errorf("cannot migrate %s: %w", sv.Name, err)
	}
	sv.Status, sv.Task = ServerMigrating, TaskMigrating
	sv.Migration = &Migration{Source: sv.Host, Dest: dest, Phase: MigrationPreparing, StartedAt: time.Now().UTC(),
		MaxDowntime: FirstMaxDowntime, PostCopy: a.PostCopy}
	return m.cfg.Store.UpdateServer(ctx, sv)
}

// migrate runs (or resumes) a live migration task. It ends with the guest
// running on exactly one host and the record saying which: on success the
// destination (the source's definition and overlay removed), on failure
// the source (the destination's removed, 700.003 raised).
func (m *Manager) migrate(ctx context.Context, sv Server) (Server, error) {
	mig := sv.Migration
	if mig == nil {
		return sv, errors.New("migration task without a migration record")
	}
	src, err := m.host(ctx, mig.Source)
	if err != nil {
		return sv, err
	}
	dst, err := m.host(ctx, mig.Dest)
	if err != nil {
		return m.migrationFailed(ctx, sv, err)
	}
	if mig.Phase == MigrationPreparing {
		err := m.withHost(ctx, dst.Name, func(c HostConn) error {
			im, err := m.cfg.Images.Image(ctx, sv.Image)
			if err != nil {
				return fmt.Errorf("image %s: %w", sv.ImageName, err)
			}
			if err := m.ensureBase(ctx, c, dst.Name, im); err != nil {
				return err
			}
			_, err = c.CreateInstanceFiles(ctx, sv.ID, im.Checksum, im.DiskFormat)
			return err
		})
		if err != nil {
			return m.migrationFailed(ctx, sv, fmt.Errorf("preparing %s: %w", dst.Name, err))
		}
		if sv, err = m.saveMigration(ctx, sv, func(mg *Migration) { mg.Phase = MigrationCopying }); err != nil {
			return sv, err
		}
		mig = sv.Migration
	}
	if mig.Phase == MigrationCopying {
		jobErr := m.copy(ctx, sv, src, dst)
		if ctx.Err() != nil {
			return sv, ctx.Err() // the next start resumes: the job goes on in the source daemon
		}
		// Where does the guest run now? The job's result may be lost with
		// a connection; the hypervisors are the truth.
		onDst := m.runsOn(ctx, dst, sv.ID)
		onSrc := m.runsOn(ctx, src, sv.ID)
		if onDst && !onSrc {
			var done MigrationProgress
			_ = m.withHost(ctx, src.Name, func(c HostConn) error {
				var err error
				done, err = c.MigrationProgress(ctx, sv.ID, true)
				return err
			})
			sv, err = m.saveMigration(ctx, sv, func(mg *Migration) {
				mg.Phase = MigrationCleaning
				if done.Elapsed > 0 {
					mg.Progress = done
				}
			})
			if err != nil {
				return sv, err
			}
			mig = sv.Migration
		} else {
			if jobErr == nil {
				jobErr = fmt.Errorf("the guest does not run on %s after the job (running on the source: %v)", dst.Name, onSrc)
			}
			return m.migrationFailed(ctx, sv, jobErr)
		}
	}
	if mig.Phase == MigrationCleaning {
		// The guest runs on the destination: the record says so first,
		// then the source's leftovers go.
		now := time.Now().UTC()
		sv.Host, sv.Status, sv.Power, sv.Fault = dst.Name, ServerActive, StateRunning, ""
		mig.Phase, mig.EndedAt = MigrationDone, &now
		if err := m.withHost(ctx, src.Name, func(c HostConn) error {
			if err := c.Undefine(ctx, sv.ID); err != nil {
				return err
			}
			return c.DeleteInstanceFiles(ctx, sv.ID)
		}); err != nil {
			// The reconciler removes a domain of this server found on
			// another host than its own.
			m.log.Warn("migration: cleaning the source failed; the reconciler will", "server", sv.Name, "host", src.Name, "err", err)
		}
		ent := "instance=" + sv.ID
		m.clear(ctx, AlarmMigrationFailed, ent)
		m.log.Info("server migrated", "server", sv.Name, "from", src.Name, "to", dst.Name,
			"job", mig.Progress.Elapsed.String(), "downtime", mig.Progress.Downtime.String())
		return sv, nil
	}
	return sv, fmt.Errorf("migration in phase %q", mig.Phase)
}

// copy runs the migration job on the source, or waits for the one a
// restart left running, polling its progress into the record and raising
// the downtime limit while the copy does not converge.
func (m *Manager) copy(ctx context.Context, sv Server, src, dst HypervisorHost) error {
	c, err := m.conn(ctx, src)
	if err != nil {
		return err
	}
	running := false
	if p, err := c.MigrationProgress(ctx, sv.ID, false); err == nil && p.Active {
		running = true // a restart found the job going on
	}
	result := make(chan error, 1)
	if running {
		m.log.Info("migration: following a job already running", "server", sv.Name, "to", dst.Name)
		result = nil
	} else {
		if st, err := c.State(ctx, sv.ID); err != nil || st != StateRunning {
			return fmt.Errorf("the guest is not running on %s (%v, %v)", src.Name, st, err)
		}
		destURI := dst.PeerURI
		if destURI == "" {
			destURI = dst.URI
		}
		addr := dst.ClusterAddr
		if addr == "" {
			addr = dst.MgmtAddr
		}
		spec := MigrateSpec{DestURI: destURI, MigrateURI: "tcp://" + addr, Disks: []string{"vda"}, AutoConverge: true,
			PostCopy: sv.Migration.PostCopy}
		go func() { result <- c.Migrate(ctx, sv.ID, spec) }()
	}
	limit := sv.Migration.MaxDowntime
	if limit <= 0 {
		limit = FirstMaxDowntime
	}
	deadline := sv.Migration.StartedAt.Add(m.cfg.MigrationTimeout)
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var lastRemaining uint64
	lastStep := time.Now()
	setLimit, postCopied := true, false
	saved := time.Time{}
	for {
		select {
		case err := <-result:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			m.log.Warn("migration over its time bound: aborting", "server", sv.Name, "bound", m.cfg.MigrationTimeout.String())
			_ = c.AbortMigration(ctx, sv.ID)
			if result == nil {
				return fmt.Errorf("aborted after %s (the time bound)", m.cfg.MigrationTimeout)
			}
			err := <-result
			return fmt.Errorf("aborted after %s (the time bound): %v", m.cfg.MigrationTimeout, err)
		}
		p, err := c.MigrationProgress(ctx, sv.ID, false)
		if err != nil && result == nil {
			// A followed job cannot be read once the domain left the
			// source (it is shut off there): the job is over, and the
			// caller looks where the guest runs.
			if st, serr := c.State(ctx, sv.ID); serr != nil || st != StateRunning {
				return nil
			}
			continue
		}
		if err != nil {
			continue
		}
		if !p.Active {
			if result == nil {
				return nil // the followed job ended; the caller looks where the guest runs
			}
			continue
		}
		if setLimit {
			if err := c.SetMaxDowntime(ctx, sv.ID, limit); err == nil {
				setLimit = false
			}
		}
		// Post-copy (asked for): switch once the first pass over memory
		// has started, as libvirt requires.
		if sv.Migration.PostCopy && !postCopied && p.MemoryProcessed > 0 {
			if err := c.StartPostCopy(ctx, sv.ID); err == nil {
				postCopied = true
				m.log.Info("migration switched to post-copy", "server", sv.Name)
			}
		}
		remaining := p.MemoryRemaining + p.DiskRemaining
		if time.Since(lastStep) >= DowntimeStep {
			if lastRemaining != 0 && remaining >= lastRemaining && limit < LastMaxDowntime {
				limit = min(2*limit, LastMaxDowntime)
				setLimit = true
				m.log.Info("migration not converging: downtime limit raised", "server", sv.Name, "limit", limit.String())
			}
			lastRemaining, lastStep = remaining, time.Now()
		}
		if time.Since(saved) >= time.Second {
			saved = time.Now()
			if nsv, err := m.saveMigration(ctx, sv, func(mg *Migration) { mg.Progress, mg.MaxDowntime = p, limit }); err == nil {
				sv = nsv
			}
		}
	}
}

// runsOn reports whether server id's domain runs on h.
func (m *Manager) runsOn(ctx context.Context, h HypervisorHost, id string) bool {
	if h.Lost {
		return false
	}
	var st State
	err := m.withHost(ctx, h.Name, func(c HostConn) error {
		var err error
		st, err = c.State(ctx, id)
		if errors.Is(err, ErrNotFound) {
			st, err = StateShutoff, nil
		}
		return err
	})
	return err == nil && st == StateRunning
}

// migrationFailed records a failed migration: the guest stays on the
// source; the destination's domain and files are removed (by the
// reconciler if the destination is unreachable); 700.003 is raised.
func (m *Manager) migrationFailed(ctx context.Context, sv Server, cause error) (Server, error) {
	mig := sv.Migration
	srcRuns := false
	if src, err := m.host(ctx, mig.Source); err == nil {
		srcRuns = m.runsOn(ctx, src, sv.ID)
	}
	dstClean := false // the destination surely does not run the guest
	if dst, err := m.host(ctx, mig.Dest); err == nil && !dst.Lost {
		err := m.withHost(ctx, dst.Name, func(c HostConn) error {
			if st, err := c.State(ctx, sv.ID); err == nil && st == StateRunning && !srcRuns {
				return errors.New("the guest runs on the destination only: kept")
			}
			if err := c.Destroy(ctx, sv.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if err := c.Undefine(ctx, sv.ID); err != nil {
				return err
			}
			return c.DeleteInstanceFiles(ctx, sv.ID)
		})
		if err != nil {
			m.log.Warn("migration failed: the destination is not cleaned", "server", sv.Name, "host", dst.Name, "err", err)
		}
		dstClean = err == nil
	}
	// The guest died on the source during the job (its QEMU ended) and
	// surely runs nowhere else: booted again on the source from its own
	// disk, which the job only read. The guest restarts (its memory is
	// lost), as after a crash; 700.003 says why.
	restarted := false
	if !srcRuns && dstClean {
		started, err := m.restartOnSource(ctx, sv)
		if err != nil {
			m.log.Warn("migration failed and the guest died: not restarted on the source", "server", sv.Name, "host", mig.Source, "err", err)
		} else {
			srcRuns, restarted = true, started
		}
	}
	now := time.Now().UTC()
	mig.Phase, mig.Reason, mig.EndedAt = MigrationFailed, cause.Error(), &now
	sv.Status, sv.Power = ServerActive, StateRunning
	if restarted {
		mig.Reason = cause.Error() + " (the guest died on " + mig.Source + " and was restarted there)"
	}
	if !srcRuns {
		sv.Status, sv.Power = ServerError, StateUnknown
		sv.Fault = "live migration failed and the guest does not run on " + mig.Source + ": " + cause.Error()
	}
	ent := "instance=" + sv.ID
	m.raise(ctx, AlarmMigrationFailed, ent, map[string]string{"instance": sv.Name, "host": mig.Source, "detail": mig.Reason})
	m.log.Warn("live migration failed: the guest stays on the source", "server", sv.Name, "from", mig.Source, "to", mig.Dest, "err", cause)
	return sv, nil
}

// restartOnSource boots sv's domain again on its source host, where it
// is defined and shut off after its QEMU ended during a migration.
// It reports whether it started it (false: it runs already, say once the
// source's libvirtd, restarted, has resumed it).
func (m *Manager) restartOnSource(ctx context.Context, sv Server) (started bool, err error) {
	err = m.withHost(ctx, sv.Migration.Source, func(c HostConn) error {
		st, err := c.State(ctx, sv.ID)
		if err != nil {
			return err
		}
		switch st {
		case StateRunning:
			return nil
		case StateShutoff, StateCrashed:
		default:
			return fmt.Errorf("its domain is %s", st)
		}
		if err := c.Start(ctx, sv.ID); err != nil {
			return err
		}
		started = true
		m.log.Warn("the guest died during its live migration: restarted on the source", "server", sv.Name, "host", sv.Migration.Source)
		return nil
	})
	return started, err
}

// saveMigration stores a change of the server's migration record.
func (m *Manager) saveMigration(ctx context.Context, sv Server, change func(*Migration)) (Server, error) {
	for {
		cp := *sv.Migration
		change(&cp)
		sv.Migration = &cp
		saved, err := m.cfg.Store.UpdateServer(ctx, sv)
		if errors.Is(err, errs.Conflict) && !errors.Is(err, ErrServerState) {
			cur, rerr := m.cfg.Store.Server(ctx, sv.ID, "")
			if rerr != nil {
				return sv, rerr
			}
			if cur.Task != TaskMigrating || cur.Migration == nil {
				return sv, err
			}
			sv = cur
			continue
		}
		return saved, err
	}
}

// EvacuateParallel is how many servers an evacuation moves at once.
const EvacuateParallel = 2

// Evacuate live-migrates every running server off host (the scheduler
// picks each destination, anti-affinity and capacity included), at most
// EvacuateParallel at a time, and keeps new servers and migrations off the
// host until release is called: the caller locks the host, then releases.
// Servers that are stopped or failed stay (they do not run). If a server
// cannot move, the error names it and why; the others have moved.
func (m *Manager) Evacuate(ctx context.Context, host string) (release func(), err error) {
	m.mu.Lock()
	if m.draining[host] {
		m.mu.Unlock()
		return func() {}, fmt.Errorf("%w: host %s is being evacuated already", ErrServerState, host)
	}
	m.draining[host] = true
	m.mu.Unlock()
	release = func() {
		m.mu.Lock()
		delete(m.draining, host)
		m.mu.Unlock()
	}
	all, _, err := m.cfg.Store.Servers(ctx, pageAll(map[string]string{"host": host}))
	if err != nil {
		return release, err
	}
	var moving []Server
	for _, sv := range all {
		if sv.Task != TaskNone && sv.Task != TaskMigrating {
			return release, fmt.Errorf("%w: server %s on %s is busy (%s): try again when it is done", ErrServerState, sv.Name, host, sv.Task)
		}
		if sv.Status == ServerActive || sv.Status == ServerMigrating || sv.Status == ServerBuilding {
			moving = append(moving, sv)
		}
	}
	start := time.Now()
	sem := make(chan struct{}, EvacuateParallel)
	errc := make(chan error, len(moving))
	for _, sv := range moving {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errc <- m.moveOff(ctx, sv, host)
		}()
	}
	var failed []string
	for range moving {
		if err := <-errc; err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		return release, fmt.Errorf("%w: %d of %d servers could not leave %s: %s", ErrServerState, len(failed), len(moving), host,
			joinReasons(failed))
	}
	m.log.Info("host evacuated", "host", host, "servers", len(moving), "took", time.Since(start).Round(time.Millisecond).String())
	return release, nil
}

// moveOff live-migrates sv off host and waits for the outcome.
func (m *Manager) moveOff(ctx context.Context, sv Server, host string) error {
	if sv.Task == TaskNone {
		if sv.Status == ServerBuilding {
			return fmt.Errorf("%s is still building", sv.Name)
		}
		if _, err := m.Act(ctx, sv.ID, ServerAction{Action: ActionMigrate}); err != nil {
			return fmt.Errorf("%s: %v", sv.Name, err)
		}
	}
	for {
		cur, err := m.cfg.Store.Server(ctx, sv.ID, "")
		if errors.Is(err, ErrServerNotFound) {
			return nil // deleted meanwhile: it left
		}
		if err != nil {
			return fmt.Errorf("%s: %v", sv.Name, err)
		}
		if cur.Task == TaskNone {
			if cur.Host == host {
				reason := "it did not move"
				if cur.Migration != nil && cur.Migration.Reason != "" {
					reason = cur.Migration.Reason
				}
				return fmt.Errorf("%s: %s", sv.Name, reason)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func joinReasons(rs []string) string { return strings.Join(rs, "; ") }

// evacuate rebuilds a server that was running on a lost host on another
// host, from its image: its disk changes since it was built are lost (the
// hosts share no storage). The scheduler picks the host (capacity,
// anti-affinity); if none fits the server stays in error on its host and
// waits for it. The copy left on the lost host is removed by the
// reconciler when that host returns.
func (m *Manager) evacuate(ctx context.Context, sv Server, lost HypervisorHost) {
	if !strings.HasPrefix(sv.Fault, faultHostLost) || sv.LaunchedAt == nil {
		return
	}
	m.placeMu.Lock()
	defer m.placeMu.Unlock()
	hosts, err := m.cfg.Hosts.HypervisorHosts(ctx)
	if err != nil {
		return
	}
	all, err := m.cfg.Store.AllServers(ctx)
	if err != nil {
		return
	}
	var group *ServerGroup
	if sv.Group != "" {
		if g, err := m.cfg.Store.ServerGroup(ctx, sv.Group, ""); err == nil {
			group = &g
		}
	}
	others := make([]Server, 0, len(all))
	for _, o := range all {
		if o.ID != sv.ID {
			others = append(others, o)
		}
	}
	dest, err := Schedule(m.cfg.Scheduler, ScheduleRequest{Flavor: sv.Flavor, Group: group}, m.candidates(hosts, lost.Name), others)
	if err != nil {
		m.log.Warn("a lost host's server cannot be rebuilt elsewhere: it waits for its host", "server", sv.Name, "host", lost.Name, "err", err)
		return
	}
	from := sv.Host
	sv.Host, sv.Task = dest, TaskEvacuating
	saved, err := m.cfg.Store.UpdateServer(ctx, sv)
	if err != nil {
		return
	}
	ent := "instance=" + sv.ID
	m.raise(ctx, AlarmInstanceEvacuating, ent, map[string]string{"instance": sv.Name, "host": from})
	m.alarmLog(ctx, ent, map[string]string{"instance": sv.Name,
		"action": fmt.Sprintf("rebuilding on %s from image %s: its host %s is %s (disk changes since it was built are lost)", dest, sv.ImageName, from, lost.Down)})
	m.log.Warn("rebuilding a lost host's server elsewhere", "server", sv.Name, "from", from, "to", dest)
	m.drive(saved.ID)
}
