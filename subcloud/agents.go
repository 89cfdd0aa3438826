package subcloud

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// Join token lifetimes.
const (
	DefaultJoinTTL = time.Hour
	MaxJoinTTL     = 7 * 24 * time.Hour
	hostCertTTL    = 365 * 24 * time.Hour
	joinPrefix     = "pj_"
)

func hashJoinSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CreateJoinTokenRequest is the body of POST /v1/join-tokens.
type CreateJoinTokenRequest struct {
	Description string `json:"description,omitempty"`
	TTLSeconds  int64  `json:"ttl_s,omitempty"`
}

// IssuedJoinToken is the answer: the secret, shown once, and its record.
type IssuedJoinToken struct {
	Token  string              `json:"token"`
	Detail inventory.JoinToken `json:"detail"`
}

func (s *Subcloud) createJoinToken(r *http.Request) (int, any, error) {
	var req CreateJoinTokenRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if req.TTLSeconds == 0 {
		ttl = DefaultJoinTTL
	}
	if ttl < time.Minute || ttl > MaxJoinTTL {
		return 0, nil, errs.Field("ttl_s", "must be from 60 to %d seconds", int64(MaxJoinTTL/time.Second))
	}
	if len(req.Description) > 200 {
		return 0, nil, errs.Field("description", "must be at most 200 characters")
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, nil, err
	}
	secret := joinPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	id, _ := uuid.NewV7()
	now := time.Now().UTC()
	p, _ := auth.PrincipalFrom(r.Context())
	t := inventory.JoinToken{ID: id.String(), Description: req.Description, CreatedBy: p.User, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.Enrollment.CreateJoinToken(r.Context(), t, hashJoinSecret(secret)); err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, IssuedJoinToken{Token: secret, Detail: t}, nil
}

func (s *Subcloud) listJoinTokens(r *http.Request) (int, any, error) {
	opts, err := rest.ParseList(r)
	if err != nil {
		return 0, nil, err
	}
	ts, next, err := s.Enrollment.JoinTokens(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[inventory.JoinToken]{Items: ts, NextPageToken: rest.EncodePageToken(next)}, nil
}

func (s *Subcloud) deleteJoinToken(r *http.Request) (int, any, error) {
	if err := s.Enrollment.DeleteJoinToken(r.Context(), rest.Var(r, "id")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Subcloud) join(r *http.Request) (int, any, error) {
	var req inventory.JoinRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	rest.Annotate(r.Context(), "user", "agent:"+req.MachineID)
	if req.JoinToken == "" {
		return 0, nil, errs.Field("join_token", "is required")
	}
	if err := inventory.ValidateMachineID("machine_id", req.MachineID); err != nil {
		return 0, nil, err
	}
	// The certificate is signed before the token is consumed, and thrown
	// away if consuming it fails: a refused join records nothing.
	certPEM, serial, err := s.agentCA.SignClientCSR([]byte(req.CSR), req.MachineID, s.cfg.Site, hostCertTTL)
	if err != nil {
		return 0, nil, errs.Field("csr", "%v", err)
	}
	now := time.Now().UTC()
	h := inventory.Host{UUID: req.MachineID, Name: inventory.DiscoveredName(req.MachineID),
		Provisioning: inventory.Unprovisioned, Administrative: inventory.Locked, Operational: inventory.Disabled,
		Availability: inventory.Offline}
	h, err = s.Enrollment.Enroll(r.Context(), hashJoinSecret(req.JoinToken), now, h,
		inventory.HostCert{MachineID: req.MachineID, Serial: serial, IssuedAt: now})
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("host joined", "machine_id", req.MachineID, "host", h.Name)
	return http.StatusCreated, inventory.JoinResponse{Host: h, Certificate: string(certPEM), ServerCA: string(s.serverCA),
		ClientCA: string(s.agentCA.CertPEM), ReportPath: "/v1/agents/" + h.UUID + "/report", SiteName: s.cfg.Site,
		SoftwareSlots: []string{}}, nil
}

type agentKey struct{}

// agentGuard admits agents holding a certificate from this site's agent CA
// that is the current one for the machine named in the path.
func (s *Subcloud) agentGuard(r *http.Request) (*http.Request, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil, errs.Wrapf(errs.Unauthenticated, "an agent certificate from this site is required")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	machineID := leaf.Subject.CommonName
	rest.Annotate(r.Context(), "user", "agent:"+machineID)
	rest.Annotate(r.Context(), "role", "agent")
	if len(leaf.Subject.OrganizationalUnit) != 1 || leaf.Subject.OrganizationalUnit[0] != s.cfg.Site {
		return nil, errs.Wrapf(errs.Unauthenticated, "certificate is not for site %s", s.cfg.Site)
	}
	cur, err := s.Enrollment.HostCert(r.Context(), machineID)
	if errors.Is(err, errs.NotFound) || (err == nil && (cur.RevokedAt != nil || cur.Serial != leaf.SerialNumber.Text(16))) {
		return nil, errs.Wrapf(errs.Unauthenticated, "certificate revoked or superseded")
	}
	if err != nil {
		return nil, err
	}
	if id := rest.Var(r, "uuid"); id != machineID {
		s.log.Warn("agent presented another host's identity", "certificate", machineID, "claimed", id)
		return nil, errs.Wrapf(errs.Forbidden, "certificate is for host %s, not %s", machineID, id)
	}
	return r.WithContext(context.WithValue(r.Context(), agentKey{}, machineID)), nil
}

func (s *Subcloud) report(r *http.Request) (int, any, error) {
	var rep inventory.Report
	if err := rest.DecodeJSON(r, &rep); err != nil {
		return 0, nil, err
	}
	if rep.BootID == "" {
		return 0, nil, errs.Field("boot_id", "is required")
	}
	if rep.Full && rep.Hardware == nil {
		return 0, nil, errs.Field("hardware", "is required in a full report")
	}
	id := r.Context().Value(agentKey{}).(string)
	if err := inventory.ValidateResourceAlarms("alarms", rep.Alarms); err != nil {
		if errors.Is(err, errs.Forbidden) {
			s.log.Warn("agent asserted an alarm beyond its own host; report refused", "machine_id", id, "err", err)
		}
		return 0, nil, err
	}
	ctx := r.Context()
	unlock, err := s.hostLocks.lock(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	defer unlock()
	for attempt := 0; ; attempt++ {
		h, err := s.Hosts.Host(ctx, id)
		if err != nil {
			return 0, nil, err
		}
		if !rep.Full && (h.BootID != rep.BootID || rep.Generation != h.ReportGeneration+1) {
			// A delta the site cannot apply: ask for everything.
			return http.StatusOK, inventory.ReportAck{Generation: h.ReportGeneration, NeedFull: true, Heartbeat: s.maint.ack(id)}, nil
		}
		if rep.Full && h.BootID == rep.BootID && rep.Generation < h.ReportGeneration {
			return http.StatusOK, inventory.ReportAck{Generation: h.ReportGeneration, Heartbeat: s.maint.ack(id)}, nil // a duplicate
		}
		// A full report of the generation the site holds is the agent's
		// retry after a failure (perhaps after the host was stored but
		// before its alarms were applied): it is applied again, with what
		// the agent holds now.
		h.BootID, h.ReportGeneration = rep.BootID, rep.Generation
		if !rep.BootedAt.IsZero() {
			b := rep.BootedAt.UTC()
			h.BootedAt = &b
		}
		now := time.Now().UTC()
		h.LastReport = &now
		if rep.SoftwareVersion != "" {
			h.SoftwareVersion = rep.SoftwareVersion
		}
		if rep.Hardware != nil {
			h.Inventory = *rep.Hardware
		}
		if rep.Software != nil {
			sw := rep.Software.Clone()
			h.Software = &sw
		}
		h.ResourceAlarms = inventory.SortResourceAlarms(rep.Alarms)
		if h.Availability == inventory.Offline || h.Availability == inventory.PowerOff {
			if err := h.SetAvailability(inventory.Online); err != nil {
				return 0, nil, err
			}
		}
		stored, err := s.Hosts.PutHost(ctx, h, h.Rev)
		if errors.Is(err, inventory.ErrStale) && attempt < 3 {
			continue // an operator changed the host meanwhile; apply the report to the new revision
		}
		if err != nil {
			return 0, nil, err
		}
		// The host (with the alarms asserted) is stored first: if applying
		// them fails, the agent's retry of this report applies them.
		if err := s.applyResourceAlarms(ctx, stored, ""); err != nil {
			return 0, nil, err
		}
		s.maint.watch(stored)
		if rep.Software != nil {
			s.settlePatches(ctx)
		}
		return http.StatusOK, inventory.ReportAck{Generation: rep.Generation, Heartbeat: s.maint.ack(id)}, nil
	}
}

// agentCAPool returns the pool verifying agent certificates.
func agentCAPool(pemBytes []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pemBytes)
	return p
}
