package subcloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/hostmgr"
	"github.com/petrel-edge/petrel/hostmgr/bmc"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
)

// bmcSecrets keeps hosts' sealed BMC access (inventorydb).
type bmcSecrets interface {
	SetBMCSecret(ctx context.Context, hostUUID string, sealed []byte) error
	BMCSecret(ctx context.Context, hostUUID string) ([]byte, string, error)
	SetBMCPin(ctx context.Context, hostUUID, pin string) error
	DeleteBMCSecret(ctx context.Context, hostUUID string) error
}

// SetBMCRequest is the body of PUT /v1/hosts/{id}/bmc. The password is
// stored sealed and never shown again.
type SetBMCRequest struct {
	Type     string `json:"type"`              // ipmi | redfish | dynamic | none
	IPMI     string `json:"ipmi,omitempty"`    // host[:port] (default 623)
	Redfish  string `json:"redfish,omitempty"` // https://host[:port][/redfish/v1]
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// bmcAccess is what is sealed: everything needed to reach the BMC.
type bmcAccess struct {
	Type     bmc.Type        `json:"type"`
	IPMI     string          `json:"ipmi"`
	Redfish  string          `json:"redfish"`
	Creds    bmc.Credentials `json:"credentials"`
	HostUUID string          `json:"host_uuid"`
}

func (req SetBMCRequest) validate() error {
	switch req.Type {
	case "none":
		return nil
	case string(bmc.IPMI), string(bmc.Redfish), string(bmc.Dynamic):
	default:
		return errs.Field("type", "must be ipmi, redfish, dynamic or none")
	}
	if req.Type != string(bmc.Redfish) {
		if req.IPMI == "" {
			return errs.Field("ipmi", "is required for type %s (host or host:port)", req.Type)
		}
		h, p, err := net.SplitHostPort(req.IPMI)
		if err != nil {
			h, p = req.IPMI, "623"
		}
		if h == "" || len(h) > 253 || strings.ContainsAny(h, " /@") || p == "" {
			return errs.Field("ipmi", "must be host or host:port")
		}
	}
	if req.Type != string(bmc.IPMI) {
		u, err := url.Parse(req.Redfish)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || len(req.Redfish) > 512 {
			return errs.Field("redfish", "must be an https URL without credentials, e.g. https://10.0.0.5/redfish/v1")
		}
	}
	if req.Username == "" || len(req.Username) > 64 || strings.ContainsAny(req.Username, "\r\n\x00") {
		return errs.Field("username", "is required (at most 64 characters)")
	}
	if req.Password == "" || len(req.Password) > 128 || strings.ContainsAny(req.Password, "\r\n\x00") {
		return errs.Field("password", "is required (at most 128 characters, one line)")
	}
	return nil
}

func (s *Subcloud) setBMC(r *http.Request) (int, any, error) {
	var req SetBMCRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if err := req.validate(); err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	h, err := s.Hosts.Host(ctx, rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if req.Type == "none" {
		if err := s.bmcs.DeleteBMCSecret(ctx, h.UUID); err != nil {
			return 0, nil, err
		}
	} else {
		acc := bmcAccess{Type: bmc.Type(req.Type), IPMI: req.IPMI, Redfish: req.Redfish,
			Creds: bmc.Credentials{Username: req.Username, Password: req.Password}, HostUUID: h.UUID}
		b, _ := json.Marshal(acc)
		if err := s.bmcs.SetBMCSecret(ctx, h.UUID, s.shell.Sealed.Seal(b, "bmc:"+h.UUID)); err != nil {
			return 0, nil, err
		}
	}
	s.bmcClients.forget(h.UUID)
	out, err := hostUpdater{s}.UpdateHost(ctx, h.UUID, func(h *inventory.Host) error {
		h.BMC = inventory.BMC{Type: req.Type, Address: bmcAddress(req), Status: "unknown"}
		if req.Type == "none" {
			h.BMC = inventory.BMC{}
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out.WithUptime(time.Now()), nil
}

// bmcAddress is what the host shows of its BMC: where it is, no secret.
func bmcAddress(req SetBMCRequest) string {
	if req.Type == string(bmc.Redfish) {
		if u, err := url.Parse(req.Redfish); err == nil {
			return u.Host
		}
	}
	return req.IPMI
}

// bmcClients caches one BMC client per host (its queue and its hold after
// refused credentials only work if every caller shares it).
type bmcClients struct {
	s  *Subcloud
	mu sync.Mutex
	m  map[string]*bmc.Client
}

func (c *bmcClients) forget(hostUUID string) {
	c.mu.Lock()
	delete(c.m, hostUUID)
	c.mu.Unlock()
}

// client returns the host's BMC client, or nil when it has no BMC.
func (c *bmcClients) client(ctx context.Context, hostUUID string) (*bmc.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.m[hostUUID]; cl != nil {
		return cl, nil
	}
	sealedAcc, pin, err := c.s.bmcs.BMCSecret(ctx, hostUUID)
	if err != nil {
		return nil, err
	}
	b, err := c.s.shell.Sealed.Open(sealedAcc, "bmc:"+hostUUID)
	if err != nil {
		return nil, fmt.Errorf("subcloud: the host's BMC access cannot be opened: %w", err)
	}
	var acc bmcAccess
	if err := json.Unmarshal(b, &acc); err != nil || acc.HostUUID != hostUUID {
		return nil, errors.New("subcloud: the host's BMC access is not this host's")
	}
	cl, err := bmc.New(bmc.Config{Type: acc.Type, IPMI: acc.IPMI, Redfish: acc.Redfish, Credentials: acc.Creds,
		Pinned: pin, Logger: c.s.log.With("component", "bmc", "host_uuid", hostUUID),
		OnPin: func(fp string) {
			if err := c.s.bmcs.SetBMCPin(context.Background(), hostUUID, fp); err != nil {
				c.s.log.Error("recording a BMC's pinned certificate failed", "host_uuid", hostUUID, "err", err)
			}
		}})
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*bmc.Client{}
	}
	c.m[hostUUID] = cl
	return cl, nil
}

// hostBMC adapts a host's BMC client to host management.
type hostBMC struct {
	s    *Subcloud
	host string
}

func (b hostBMC) cl(ctx context.Context) (*bmc.Client, error) {
	return b.s.bmcClients.client(ctx, b.host)
}

func (b hostBMC) Power(ctx context.Context) (hostmgr.Power, error) {
	cl, err := b.cl(ctx)
	if err != nil {
		return hostmgr.PowerUnreachable, err
	}
	p, err := cl.PowerState(ctx)
	b.s.bmcStatus(ctx, b.host, err)
	if err != nil {
		return hostmgr.PowerUnreachable, err
	}
	switch p {
	case bmc.PowerOn:
		return hostmgr.PowerOn, nil
	case bmc.PowerOff:
		return hostmgr.PowerOff, nil
	}
	return hostmgr.PowerUnreachable, nil
}

func (b hostBMC) do(ctx context.Context, f func(*bmc.Client, context.Context) error) error {
	cl, err := b.cl(ctx)
	if err != nil {
		return err
	}
	err = f(cl, ctx)
	b.s.bmcStatus(ctx, b.host, err)
	return err
}

func (b hostBMC) PowerOn(ctx context.Context) error    { return b.do(ctx, (*bmc.Client).PowerOn) }
func (b hostBMC) PowerOff(ctx context.Context) error   { return b.do(ctx, (*bmc.Client).PowerOff) }
func (b hostBMC) Reset(ctx context.Context) error      { return b.do(ctx, (*bmc.Client).Reset) }
func (b hostBMC) PowerCycle(ctx context.Context) error { return b.do(ctx, (*bmc.Client).PowerCycle) }

// bmcFor is host management's view of a host's BMC; nil without one.
func (s *Subcloud) bmcFor(hostUUID string) hostmgr.BMC {
	if _, _, err := s.bmcs.BMCSecret(context.Background(), hostUUID); err != nil {
		return nil
	}
	return hostBMC{s: s, host: hostUUID}
}

// bmcStatus records whether a host's BMC answered: its status in the
// inventory, and 200.010 while it does not.
func (s *Subcloud) bmcStatus(ctx context.Context, hostUUID string, callErr error) {
	ctx = context.WithoutCancel(ctx) // the call's deadline may have passed: record it anyway
	status := "ok"
	switch {
	case errors.Is(callErr, bmc.ErrAuth):
		status = "auth-failed"
	case errors.Is(callErr, bmc.ErrUnreachable):
		status = "unreachable"
	case errors.Is(callErr, bmc.ErrTLSPinMismatch), errors.Is(callErr, bmc.ErrTLSUntrusted):
		status = "certificate-refused"
	case callErr != nil && !errors.Is(callErr, bmc.ErrFailed) && !errors.Is(callErr, bmc.ErrBusy):
		status = "error"
	}
	h, err := s.Hosts.Host(ctx, hostUUID)
	if err != nil {
		return
	}
	entity := "host=" + h.Name
	if status == "ok" || errors.Is(callErr, bmc.ErrFailed) {
		s.shell.Alarms.Clear(ctx, "200.010", entity)
	} else {
		s.shell.Alarms.Raise(ctx, "200.010", entity, map[string]string{"detail": bmc.RepairHint(callErr)})
	}
	if h.BMC.Status == status {
		return
	}
	hostUpdater{s}.UpdateHost(ctx, hostUUID, func(h *inventory.Host) error {
		if h.BMC.Type != "" {
			h.BMC.Status = status
		}
		return nil
	})
}

func (s *Subcloud) hostSensors(r *http.Request) (int, any, error) {
	h, err := s.Hosts.Host(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	if s.bmcFor(h.UUID) == nil {
		return 0, nil, errs.Wrapf(errs.Conflict, "host %s has no BMC: set one with petrel host bmc set", h.Name)
	}
	cl, err := s.bmcClients.client(r.Context(), h.UUID)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	sensors, err := cl.Sensors(ctx)
	s.bmcStatus(ctx, h.UUID, err)
	if err != nil {
		return 0, nil, errs.Wrapf(errs.Unavailable, "the BMC of %s: %v", h.Name, err)
	}
	if sensors == nil {
		sensors = []bmc.Sensor{}
	}
	return http.StatusOK, rest.List[bmc.Sensor]{Items: sensors}, nil
}
