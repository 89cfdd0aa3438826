package libvirt

import (
	"context"
	"fmt"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/petrel-edge/petrel/compute"
)

var _ compute.Migrator = (*Driver)(nil)

func stringParam(k, v string) golibvirt.TypedParam {
	return golibvirt.TypedParam{Field: k, Value: *golibvirt.NewTypedParamValueString(v)}
}

// Migrate runs one peer-to-peer live block migration: the source daemon
// connects to spec.DestURI and copies memory and the overlay (the
// destination overlay must exist, with its base) to spec.MigrateURI. The
// flags are the verified set (shared/notes/vm-disk-images.md §7): never
// unsafe, never tunnelled. The source keeps the definition (shut off):
// the caller reads the completed job's statistics, then undefines it.
func (d *Driver) Migrate(ctx context.Context, id string, spec compute.MigrateSpec) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if spec.DestURI == "" || spec.MigrateURI == "" {
		return fmt.Errorf("libvirt: migrate %s: a destination URI and a migrate URI are required", id)
	}
	flags := golibvirt.MigrateLive | golibvirt.MigratePeer2peer | golibvirt.MigrateNonSharedInc |
		golibvirt.MigratePersistDest | golibvirt.MigrateAbortOnError
	if spec.AutoConverge {
		flags |= golibvirt.MigrateAutoConverge
	}
	if spec.PostCopy {
		flags |= golibvirt.MigratePostcopy
	}
	params := []golibvirt.TypedParam{stringParam(golibvirt.MigrateParamURI, spec.MigrateURI)}
	disks := spec.Disks
	if len(disks) == 0 {
		disks = []string{"vda"}
	}
	for _, dk := range disks {
		params = append(params, stringParam(golibvirt.MigrateParamMigrateDisks, dk))
	}
	if _, err := d.l.DomainMigratePerform3Params(dom, golibvirt.OptString{spec.DestURI}, params, nil, flags); err != nil {
		return fmt.Errorf("libvirt: migrate %s to %s: %w", id, spec.DestURI, err)
	}
	return nil
}

// MigrationProgress reads the domain's running job, or with completed
// its last completed one.
func (d *Driver) MigrationProgress(ctx context.Context, id string, completed bool) (compute.MigrationProgress, error) {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return compute.MigrationProgress{}, err
	}
	var flags golibvirt.DomainGetJobStatsFlags
	if completed {
		flags = golibvirt.DomainJobStatsCompleted
	}
	typ, ps, err := d.l.DomainGetJobStats(dom, flags)
	if err != nil {
		return compute.MigrationProgress{}, fmt.Errorf("libvirt: job stats %s: %w", id, err)
	}
	p := compute.MigrationProgress{Active: golibvirt.DomainJobType(typ) == golibvirt.DomainJobUnbounded ||
		golibvirt.DomainJobType(typ) == golibvirt.DomainJobBounded}
	for _, tp := range ps {
		var v uint64
		switch x := tp.Value.I.(type) {
		case uint64:
			v = x
		case int64:
			v = uint64(max(x, 0))
		case uint32:
			v = uint64(x)
		case int32:
			v = uint64(max(x, 0))
		default:
			continue
		}
		switch tp.Field {
		case golibvirt.DomainJobTimeElapsed:
			p.Elapsed = time.Duration(v) * time.Millisecond
		case golibvirt.DomainJobMemoryTotal:
			p.MemoryTotal = v
		case golibvirt.DomainJobMemoryProcessed:
			p.MemoryProcessed = v
		case golibvirt.DomainJobMemoryRemaining:
			p.MemoryRemaining = v
		case golibvirt.DomainJobDiskTotal:
			p.DiskTotal = v
		case golibvirt.DomainJobDiskProcessed:
			p.DiskProcessed = v
		case golibvirt.DomainJobDiskRemaining:
			p.DiskRemaining = v
		case golibvirt.DomainJobMemoryDirtyRate:
			p.DirtyRate = v
		case golibvirt.DomainJobMemoryIteration:
			p.Iterations = v
		case golibvirt.DomainJobDowntime:
			p.Downtime = time.Duration(v) * time.Millisecond
		}
	}
	return p, nil
}

// SetMaxDowntime sets the migration's downtime limit.
func (d *Driver) SetMaxDowntime(ctx context.Context, id string, limit time.Duration) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if err := d.l.DomainMigrateSetMaxDowntime(dom, uint64(limit.Milliseconds()), 0); err != nil {
		return fmt.Errorf("libvirt: set max downtime %s: %w", id, err)
	}
	return nil
}

// AbortMigration aborts the domain's running job.
func (d *Driver) AbortMigration(ctx context.Context, id string) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if err := d.l.DomainAbortJob(dom); err != nil {
		return fmt.Errorf("libvirt: abort job %s: %w", id, err)
	}
	return nil
}

// StartPostCopy switches the running migration job to post-copy.
func (d *Driver) StartPostCopy(ctx context.Context, id string) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if err := d.l.DomainMigrateStartPostCopy(dom, 0); err != nil {
		return fmt.Errorf("libvirt: start post-copy %s: %w", id, err)
	}
	return nil
}
