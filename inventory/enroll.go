package inventory

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
)

// JoinToken lets one new host join the site, once, before it expires. Its
// secret is shown at creation and stored only as a hash.
type JoinToken struct {
	ID          string     `json:"id"`
	Description string     `json:"description"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	UsedAt      *time.Time `json:"used_at"`
	UsedBy      string     `json:"used_by"` // the machine identity that joined with it
}

// HostCert records the client certificate issued to a host at join.
type HostCert struct {
	MachineID string
	Serial    string
	IssuedAt  time.Time
	RevokedAt *time.Time
}

// Enrollment errors.
var (
	// ErrJoinRefused covers unknown, used and expired join tokens alike.
	ErrJoinRefused      = errs.New(errs.Unauthenticated, "join token unknown, used or expired")
	ErrJoinTokenMissing = errs.New(errs.NotFound, "join token not found")
)

// Enrollment keeps join tokens and host certificates. Implementations:
// inventorydb.
type Enrollment interface {
	CreateJoinToken(ctx context.Context, t JoinToken, secretHash string) error
	JoinTokens(ctx context.Context, opts page.Options) ([]JoinToken, string, error)
	DeleteJoinToken(ctx context.Context, id string) error
	// Enroll consumes the join token and records the host and its
	// certificate in one transaction: on any error nothing is recorded. A
	// machine that joins again keeps its host record and gets the new
	// certificate (the old one is revoked); the same machine may retry with
	// the token it used (its first answer may have been lost), no other.
	Enroll(ctx context.Context, secretHash string, now time.Time, h Host, cert HostCert) (Host, error)
	// HostCert returns the certificate currently recorded for a machine.
	HostCert(ctx context.Context, machineID string) (HostCert, error)
}

var machineIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidateMachineID checks a machine identity: a UUID in lower case, not
// the all-zero or all-F values some firmware reports.
func ValidateMachineID(field, id string) error {
	if !machineIDPattern.MatchString(id) {
		return errs.Field(field, "must be a lower-case UUID")
	}
	if strings.Trim(id, "0-") == "" || strings.Trim(id, "f-") == "" {
		return errs.Field(field, "is a placeholder UUID, not a machine identity")
	}
	return nil
}

var hostNamePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidateHostName checks a host name.
func ValidateHostName(field, name string) error {
	if !hostNamePattern.MatchString(name) {
		return errs.Field(field, "must be 1-63 characters: a lower-case letter, then lower-case letters, digits or '-'")
	}
	return nil
}

// DiscoveredName is the name a newly discovered host carries until it is
// assigned one.
func DiscoveredName(machineID string) string { return "unprovisioned-" + machineID[:8] }
