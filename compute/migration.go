package compute

import (
	"context"
	"time"
)

// MigrateSpec is how a live migration runs, as the source host's
// hypervisor is asked.
type MigrateSpec struct {
	// DestURI is the destination hypervisor's URI as the source
	// hypervisor reaches it (peer to peer: the source daemon connects).
	DestURI string
	// MigrateURI is where the memory and the disk copy go
	// (tcp://<destination's cluster address>): always explicit.
	MigrateURI string
	// Disks are the disk targets copied (block migration of the
	// instance's overlay; the destination overlay exists beforehand).
	Disks []string
	// AutoConverge lets QEMU throttle a guest that dirties memory faster
	// than it is copied.
	AutoConverge bool
	// PostCopy allows switching to post-copy (opt-in: the VM is lost if
	// the destination fails during it).
	PostCopy bool
}

// MigrationProgress is where a running (or the last completed)
// migration job stands.
type MigrationProgress struct {
	Elapsed         time.Duration `json:"elapsed"`
	MemoryTotal     uint64        `json:"memory_total"`
	MemoryProcessed uint64        `json:"memory_processed"`
	MemoryRemaining uint64        `json:"memory_remaining"`
	DiskTotal       uint64        `json:"disk_total"`
	DiskProcessed   uint64        `json:"disk_processed"`
	DiskRemaining   uint64        `json:"disk_remaining"`
	DirtyRate       uint64        `json:"dirty_rate_pages_s"`
	Iterations      uint64        `json:"iterations"`
	// Downtime is the guest's pause at the switch-over (completed jobs),
	// or the expected one (running jobs).
	Downtime time.Duration `json:"downtime"`
	Active   bool          `json:"active"`
}

// Migrator live-migrates domains: what a source host's hypervisor does.
type Migrator interface {
	// Migrate live-migrates domain id per spec and returns when the job
	// ends (nil: the domain runs on the destination, persistent there,
	// still defined and shut off on the source).
	Migrate(ctx context.Context, id string, spec MigrateSpec) error
	// MigrationProgress reads the running job (completed: the last one).
	MigrationProgress(ctx context.Context, id string, completed bool) (MigrationProgress, error)
	// SetMaxDowntime sets the most the guest may be paused at switch-over.
	SetMaxDowntime(ctx context.Context, id string, d time.Duration) error
	// AbortMigration cancels the running job; the domain stays on the
	// source.
	AbortMigration(ctx context.Context, id string) error
	// StartPostCopy switches a running job started with PostCopy to
	// post-copy: the guest runs on the destination at once and pulls the
	// rest of its memory from the source.
	StartPostCopy(ctx context.Context, id string) error
}
