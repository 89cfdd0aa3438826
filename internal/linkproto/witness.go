package linkproto

import (
	"regexp"
	"unicode/utf8"
)

// The witness protocol: each controller of a duplex site keeps a session
// of its own to central (apart from the site's dial-home link), on the same
// listener and with the same site certificate. Its first frame is
// witness_hello{site, controller, protocols}; central answers welcome or
// goodbye. Then the controller sends requests and central answers each in
// order, echoing its Seq:
//
//	witness_renew{renew}  ->  witness_state{state}
//	witness_claim{claim}  ->  witness_grant{grant}
const (
	TypeWitnessHello = "witness_hello" // controller -> central, first
	TypeWitnessRenew = "witness_renew" // controller -> central: its role, epoch and lsn
	TypeWitnessState = "witness_state" // central -> controller: the site's holder and the peer
	TypeWitnessClaim = "witness_claim" // controller -> central: asks for the active role
	TypeWitnessGrant = "witness_grant" // central -> controller: granted or refused, with why
)

// WitnessRole is what a controller says it is.
type WitnessRole string

const (
	RoleActive   WitnessRole = "active"
	RoleStandby  WitnessRole = "standby"
	RoleStarting WitnessRole = "starting"
)

// Valid reports whether r is one of the roles above.
func (r WitnessRole) Valid() bool {
	return r == RoleActive || r == RoleStandby || r == RoleStarting
}

var controllerName = regexp.MustCompile(`^controller-[0-9]+$`)

// ValidController reports whether name can name a site's controller.
func ValidController(name string) bool { return len(name) <= 63 && controllerName.MatchString(name) }

// WitnessRenew is a controller's periodic word to the witness: what it is
// now. Epoch is the controller's current committed epoch, LSN how far its
// copy of the site's database goes.
type WitnessRenew struct {
	Controller string      `json:"controller"`
	Role       WitnessRole `json:"role"`
	Epoch      uint64      `json:"epoch"`
	LSN        uint64      `json:"lsn"`
}

// WitnessState is the witness's view of the site, answering a renew.
type WitnessState struct {
	Holder      string       `json:"holder"` // the controller last granted the active role; "" if none
	HolderEpoch uint64       `json:"holder_epoch"`
	Peer        *WitnessPeer `json:"peer,omitempty"` // the other controller, if central knows one
	// Superseded: the renewing controller says it is active at an epoch
	// below HolderEpoch: another controller holds the role now.
	Superseded bool `json:"superseded"`
}

// WitnessPeer is what the witness last heard of the other controller.
type WitnessPeer struct {
	Name  string      `json:"name"`
	Role  WitnessRole `json:"role,omitempty"`
	Epoch uint64      `json:"epoch"`
	LSN   uint64      `json:"lsn"`
	// SeenAgoMs is how long ago its last renew arrived; -1 if central has
	// not heard it since central started.
	SeenAgoMs    int64 `json:"seen_ago_ms"`
	LeaseExpired bool  `json:"lease_expired"`
}

// WitnessClaim asks for the active role at Epoch, the new epoch wanted.
type WitnessClaim struct {
	Controller string `json:"controller"`
	Epoch      uint64 `json:"epoch"`
	LSN        uint64 `json:"lsn"`
	Reason     string `json:"reason"`
	// PeerPowerOff: the claimant read the other controller's BMC as
	// powered off (docs/ha.md D51): the holder's lease need not run out.
	PeerPowerOff bool `json:"peer_power_off,omitempty"`
}

// WitnessGrant answers a claim. Holder and HolderEpoch are the site's
// after the answer (the claimant's own on a grant).
type WitnessGrant struct {
	Granted     bool   `json:"granted"`
	Holder      string `json:"holder"`
	HolderEpoch uint64 `json:"holder_epoch"`
	Reason      string `json:"reason"` // why it was refused; the claim's reason on a grant
}

// Reasons a claim is refused.
const (
	RefusedStaleEpoch   = "stale epoch"                        // the epoch wanted does not exceed holder_epoch
	RefusedHolderAlive  = "holder alive"                       // another controller holds the role and its lease runs
	RefusedLacksEpoch   = "claimant lacks the latest epoch"    // the claimant's committed epoch is below holder_epoch
	RefusedUnrecorded   = "central could not record the grant" // the grant was not made durable
	RefusedBadClaim     = "bad claim"                          // the claim names another controller or epoch 0
	maxWitnessReasonLen = 256
)

// TrimReason bounds a claim's reason to what central records.
func TrimReason(s string) string {
	if len(s) <= maxWitnessReasonLen {
		return s
	}
	n := maxWitnessReasonLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
