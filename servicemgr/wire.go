package servicemgr

import "time"

// The site<->agent protocol for service group members (over the agent's
// mutual TLS, like reports and commands):
//
//	GET /v1/agents/{uuid}/services?version=V&wait=25s
//	    the members this host must run (AgentServices); with version V the
//	    call waits (up to wait, at most 60 s) until the desired state
//	    differs from version V, then answers; without it, answers at once.
//	PUT /v1/agents/{uuid}/services/status
//	    what the agent runs now (AgentStatus); 204.
//
// The desired state is level-triggered: every answer lists every member
// of the host. A member absent from it is stopped.

// Role is what a member is asked to be.
type Role string

const (
	RoleActive  Role = "active"  // runs, is activated, serves (and holds its floating address)
	RoleStandby Role = "standby" // runs and passes its health checks, does not serve
)

// Assignment is one member a host's agent must run.
type Assignment struct {
	Group string `json:"group"`
	Role  Role   `json:"role"`
	// Epoch is the group's epoch of this assignment (a fencing token from
	// etcd). The agent keeps the highest epoch it has seen per group
	// (persisted) and refuses an assignment with an older one.
	Epoch uint64 `json:"epoch"`
	// Slot is the active slot (0..N-1) of an active member; -1 for a
	// standby.
	Slot    int         `json:"slot"`
	Health  HealthCheck `json:"health"`
	Actions Actions     `json:"actions"`
	// Floating is the address the member takes while active (its slot's):
	// "ADDR/PREFIX" on the host's interface named Network; "" for none.
	Floating string `json:"floating,omitempty"`
	Network  string `json:"network,omitempty"`
}

// AgentServices is the answer to GET /v1/agents/{uuid}/services.
type AgentServices struct {
	// Version changes whenever this host's desired members change.
	Version uint64 `json:"version"`
	// ControllerEpoch is the site controller's term of leadership: the etcd
	// revision of its election key, which only grows from term to term. The
	// agent keeps the highest it has seen (persisted) and refuses a whole
	// answer with an older one.
	ControllerEpoch uint64       `json:"controller_epoch"`
	Members         []Assignment `json:"members"`
	// Host is the host's name in the site's inventory: the agent's {host},
	// PETREL_HOST and role.json "host". Empty: the agent uses its own
	// host name.
	Host string `json:"host,omitempty"`
}

// MemberState is what an agent reports of one member.
type MemberState string

const (
	MemberStarting MemberState = "starting" // started, health not yet passed
	MemberStandby  MemberState = "standby"  // running, healthy, not serving
	MemberActive   MemberState = "active"   // activated, healthy, serving
	MemberFailed   MemberState = "failed"   // health failed or would not start: stopped, restarting after a backoff
	MemberStopping MemberState = "stopping" // being stopped (removed from the host)
)

// MemberStatus is an agent's report of one member.
type MemberStatus struct {
	Group string      `json:"group"`
	Epoch uint64      `json:"epoch"` // the epoch of the assignment in effect
	Role  Role        `json:"role"`  // the role in effect
	State MemberState `json:"state"`
	// Reason says why, for failed (and the last failure otherwise).
	Reason string `json:"reason,omitempty"`
	// Restarts counts restarts after failures since the member was
	// assigned to this host (this boot); Backoff is the wait before the
	// next one.
	Restarts int           `json:"restarts"`
	Backoff  time.Duration `json:"backoff_ns,omitempty"`
	Since    time.Time     `json:"since"`
}

// AgentStatus is the body of PUT /v1/agents/{uuid}/services/status.
type AgentStatus struct {
	BootID string `json:"boot_id"`
	// Version is the desired-state version the agent has applied.
	Version uint64         `json:"version"`
	Members []MemberStatus `json:"members"`
}

// HealthCheck is how an agent knows a member is healthy.
type HealthCheck struct {
	// Type is process (the start action's process is alive), tcp (a
	// connection to Target, host:port, succeeds), http (GET Target answers
	// 2xx) or command (Command exits 0).
	Type    string   `json:"type"`
	Target  string   `json:"target,omitempty"`
	Command []string `json:"command,omitempty"`
	// IntervalMS between checks (default 500), TimeoutMS of one check
	// (default 1000), Failures in a row that fail the member (default 3).
	IntervalMS int `json:"interval_ms,omitempty"`
	TimeoutMS  int `json:"timeout_ms,omitempty"`
	Failures   int `json:"failures,omitempty"`
}

// Actions are what the agent runs for a member. Each is an argv (no
// shell). Before expansion, these placeholders are replaced in every
// argument (and in health Target and Command): {host} {group} {mgmt}
// {cluster} (the host's addresses) {state_dir} (the member's own
// directory) {floating} (the slot's address without prefix, "" if none).
// The agent runs them with PETREL_GROUP, PETREL_HOST, PETREL_ROLE,
// PETREL_EPOCH and PETREL_STATE_DIR in the environment, and writes
// {state_dir}/role.json ({"host","group","role","epoch"}) before
// activation, deactivation and start.
type Actions struct {
	Start      []string `json:"start"`                // the member's long-running process (required)
	Stop       []string `json:"stop,omitempty"`       // default: SIGTERM to the start process, SIGKILL after 5 s
	Activate   []string `json:"activate,omitempty"`   // one-shot, on becoming active
	Deactivate []string `json:"deactivate,omitempty"` // one-shot, on ceasing to be active
}

// RoleFile is the member's role as the agent writes it in its state
// directory (role.json): what the demo service answers.
type RoleFile struct {
	Host  string `json:"host"`
	Group string `json:"group"`
	Role  Role   `json:"role"`
	Epoch uint64 `json:"epoch"`
}
