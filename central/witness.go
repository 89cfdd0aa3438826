package central

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// Central is the witness of duplex sites: two controllers have no quorum,
// so the one that may be active is the one central last granted the role
// to. Each controller keeps a witness session of its own (apart from the
// site's dial-home link, which it never touches) and renews every few
// hundred milliseconds with its role, epoch and database position; a
// controller that wants the active role claims it with a new epoch.
//
// What each controller last said lives in memory; the holder, its epoch
// and when it was granted are recorded in dc_witness before a grant is
// answered, so a central restart never forgets a grant.

// DefaultWitnessLeaseTTL is how long a controller's last renew keeps its
// lease when Config.WitnessLeaseTTL is zero.
const DefaultWitnessLeaseTTL = 2 * time.Second

// LogWitnessGrant is the event logged at every grant (faultmgr/alarms.yaml).
const LogWitnessGrant = "400.020"

// witnessIdle closes a witness session that sends nothing for this long.
const witnessIdle = 10 * time.Second

// maxControllers bounds the controllers central remembers per site (a
// duplex site has two; a site cannot make central keep more).
const maxControllers = 8

type witnessRow struct {
	Site        string    `gorm:"primaryKey;size:63"`
	Holder      string    `gorm:"size:63;not null"`
	HolderEpoch uint64    `gorm:"not null"`
	GrantedAt   time.Time `gorm:"not null"`
}

func (witnessRow) TableName() string { return "dc_witness" }

// witness keeps every duplex site's holder and its controllers' leases.
type witness struct {
	db  *sqldb.DB
	ttl time.Duration
	log *slog.Logger

	mu    sync.Mutex
	start time.Time // central began hearing renews: holders not heard since count as alive for ttl
	sites map[string]*siteWitness
}

// siteWitness is one site's witness state; mu orders its renews and claims.
type siteWitness struct {
	mu          sync.Mutex
	loaded      bool // holder fields read from dc_witness
	holder      string
	holderEpoch uint64
	grantedAt   time.Time
	heard       map[string]heard // by controller, this run of central
	sessions    map[*yamux.Session]bool
}

// heard is a controller's last renew.
type heard struct {
	at         time.Time
	role       linkproto.WitnessRole
	epoch, lsn uint64
}

func openWitness(ctx context.Context, db *sqldb.DB, ttl time.Duration, log *slog.Logger) (*witness, error) {
	if err := sqldb.Migrate(ctx, db, &witnessRow{}); err != nil {
		return nil, fmt.Errorf("central: migrate witness: %w", err)
	}
	if ttl <= 0 {
		ttl = DefaultWitnessLeaseTTL
	}
	return &witness{db: db, ttl: ttl, log: log, start: time.Now(), sites: map[string]*siteWitness{}}, nil
}

// begin marks when central starts hearing renews.
func (w *witness) begin(now time.Time) {
	w.mu.Lock()
	w.start = now
	w.mu.Unlock()
}

func (w *witness) started() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.start
}

func (w *witness) site(name string) *siteWitness {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.sites[name]
	if s == nil {
		s = &siteWitness{heard: map[string]heard{}, sessions: map[*yamux.Session]bool{}}
		w.sites[name] = s
	}
	return s
}

// load reads the site's holder once; the caller holds s.mu.
func (w *witness) load(ctx context.Context, site string, s *siteWitness) error {
	if s.loaded {
		return nil
	}
	var r witnessRow
	err := w.db.WithContext(ctx).Where("site = ?", site).Take(&r).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
	case err != nil:
		return fmt.Errorf("central: witness record of %s: %w", site, err)
	default:
		s.holder, s.holderEpoch, s.grantedAt = r.Holder, r.HolderEpoch, r.GrantedAt
	}
	s.loaded = true
	return nil
}

// expired reports whether h's lease has run out at now. A controller not
// heard since central started counts as alive for a lease from the start,
// so a restarted central does not hand its role away at once.
func (w *witness) expired(h heard, now time.Time) bool {
	if h.at.IsZero() {
		return now.Sub(w.started()) >= w.ttl
	}
	return now.Sub(h.at) >= w.ttl
}

// renew records r and answers with the site's state.
func (w *witness) renew(ctx context.Context, site string, r linkproto.WitnessRenew, now time.Time) (linkproto.WitnessState, error) {
	s := w.site(site)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.load(ctx, site, s); err != nil {
		return linkproto.WitnessState{}, err
	}
	if _, known := s.heard[r.Controller]; !known && len(s.heard) >= maxControllers {
		return linkproto.WitnessState{}, fmt.Errorf("witness: site %s already has %d controllers", site, maxControllers)
	}
	s.heard[r.Controller] = heard{at: now, role: r.Role, epoch: r.Epoch, lsn: r.LSN}
	st := linkproto.WitnessState{Holder: s.holder, HolderEpoch: s.holderEpoch}
	// Active while another controller holds the role at an epoch at least
	// as new: this one was superseded and must step down.
	st.Superseded = r.Role == linkproto.RoleActive && s.holder != "" && s.holder != r.Controller && r.Epoch <= s.holderEpoch
	if peer := w.peer(s, r.Controller); peer != "" {
		h := s.heard[peer]
		p := &linkproto.WitnessPeer{Name: peer, Role: h.role, Epoch: h.epoch, LSN: h.lsn, SeenAgoMs: -1,
			LeaseExpired: w.expired(h, now)}
		if !h.at.IsZero() {
			p.SeenAgoMs = now.Sub(h.at).Milliseconds()
		}
		st.Peer = p
	}
	return st, nil
}

// peer is the other controller of self's site: the holder if it is not
// self, else the one heard from last; "" if central knows none.
func (w *witness) peer(s *siteWitness, self string) string {
	if s.holder != "" && s.holder != self {
		return s.holder
	}
	best, at := "", time.Time{}
	for name, h := range s.heard {
		if name != self && (best == "" || h.at.After(at)) {
			best, at = name, h.at
		}
	}
	return best
}

// claim decides c, records a grant durably before answering, and reports
// the grant's previous holder for the event log.
func (w *witness) claim(ctx context.Context, site string, c linkproto.WitnessClaim, now time.Time) (linkproto.WitnessGrant, string, error) {
	s := w.site(site)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.load(ctx, site, s); err != nil {
		return linkproto.WitnessGrant{}, "", err
	}
	refuse := func(reason string) (linkproto.WitnessGrant, string, error) {
		return linkproto.WitnessGrant{Holder: s.holder, HolderEpoch: s.holderEpoch, Reason: reason}, "", nil
	}
	if c.Epoch <= s.holderEpoch {
		return refuse(linkproto.RefusedStaleEpoch)
	}
	if s.holder != "" && s.holder != c.Controller {
		h := s.heard[s.holder]
		// A holder that renews as standby has stepped down, and one that
		// renews as starting (restarted, not serving) holds nothing until
		// it claims again; one that says active (or has not been heard
		// yet) keeps the role while its lease runs.
		// A claimant that read the holder's BMC as off needs no lease to
		// run out: a powered-off controller serves nothing.
		if !w.expired(h, now) && h.role != linkproto.RoleStandby && h.role != linkproto.RoleStarting && !c.PeerPowerOff {
			return refuse(linkproto.RefusedHolderAlive)
		}
		if s.heard[c.Controller].epoch < s.holderEpoch {
			return refuse(linkproto.RefusedLacksEpoch)
		}
	}
	prev := s.holder
	row := witnessRow{Site: site, Holder: c.Controller, HolderEpoch: c.Epoch, GrantedAt: now.UTC()}
	err := w.db.WithContext(ctx).Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "site"}},
		DoUpdates: clause.AssignmentColumns([]string{"holder", "holder_epoch", "granted_at"})}).Create(&row).Error
	if err != nil {
		w.log.Error("recording a witness grant failed; refused", "site", site, "controller", c.Controller, "err", err)
		return refuse(linkproto.RefusedUnrecorded)
	}
	s.holder, s.holderEpoch, s.grantedAt = c.Controller, c.Epoch, row.GrantedAt
	return linkproto.WitnessGrant{Granted: true, Holder: s.holder, HolderEpoch: s.holderEpoch, Reason: c.Reason}, prev, nil
}

// register adds a witness session of site; the caller holds Central.linkMu.
func (w *witness) register(site string, sess *yamux.Session) {
	s := w.site(site)
	s.mu.Lock()
	s.sessions[sess] = true
	s.mu.Unlock()
}

func (w *witness) unregister(site string, sess *yamux.Session) {
	s := w.site(site)
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// closeSessions ends site's witness sessions (its certificate was
// reissued, or it was deleted).
func (w *witness) closeSessions(site string) {
	w.mu.Lock()
	s := w.sites[site]
	w.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for sess := range s.sessions {
		sess.Close()
	}
}

// forget drops a deleted site's witness state, durable and in memory.
func (w *witness) forget(ctx context.Context, site string) error {
	w.closeSessions(site)
	w.mu.Lock()
	delete(w.sites, site)
	w.mu.Unlock()
	return w.db.WithContext(ctx).Where("site = ?", site).Delete(&witnessRow{}).Error
}

// serveWitness runs one controller's witness session after its
// witness_hello: the identity is the certificate's site, the controller
// the hello's; then renews and claims, each answered in order.
func (c *Central) serveWitness(ctx context.Context, sess *yamux.Session, ctl net.Conn, site string,
	chain []*x509.Certificate, hello linkproto.Message) error {
	bye := func(reason string) {
		_ = linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeGoodbye, Reason: reason, SentAt: time.Now().UTC()})
	}
	if hello.Site != site {
		c.log.Warn("a witness session spoke for another site", "certificate", site, "claimed", hello.Site)
		bye("hello names another site")
		return fmt.Errorf("%w: certificate %s, witness hello %s", ErrSiteIdentity, site, hello.Site)
	}
	ctrl := hello.Controller
	if !linkproto.ValidController(ctrl) {
		bye("controller names must match controller-N")
		return fmt.Errorf("witness: site %s: bad controller name %q", site, ctrl)
	}
	proto, ok := linkproto.Choose(hello.Protocols)
	if !ok {
		bye(fmt.Sprintf("no common protocol: central speaks %d", linkproto.Current))
		return fmt.Errorf("witness: site %s offers protocols %v", site, hello.Protocols)
	}
	c.linkMu.Lock()
	if err := c.currentCertificate(ctx, site, chain); err != nil {
		c.linkMu.Unlock()
		bye("certificate refused")
		return err
	}
	c.witness.register(site, sess)
	c.linkMu.Unlock()
	defer c.witness.unregister(site, sess)
	if err := linkproto.Write(ctl, linkproto.Message{Type: linkproto.TypeWelcome, Protocol: proto, SentAt: time.Now().UTC()}); err != nil {
		return err
	}
	log := c.log.With("site", site, "controller", ctrl)
	log.Info("witness session open", "remote", ctl.RemoteAddr().String())
	defer log.Info("witness session closed")

	for {
		ctl.SetReadDeadline(time.Now().Add(witnessIdle))
		m, err := linkproto.Read(ctl)
		if err != nil {
			return err
		}
		reply := linkproto.Message{Seq: m.Seq}
		switch m.Type {
		case linkproto.TypeWitnessRenew:
			if m.Renew == nil || m.Renew.Controller != ctrl || !m.Renew.Role.Valid() {
				bye("a renew must name this session's controller and a valid role")
				return fmt.Errorf("witness: %s of %s sent a bad renew", ctrl, site)
			}
			st, err := c.witness.renew(ctx, site, *m.Renew, time.Now())
			if err != nil {
				return err
			}
			reply.Type, reply.State = linkproto.TypeWitnessState, &st
		case linkproto.TypeWitnessClaim:
			if m.Claim == nil || m.Claim.Controller != ctrl {
				bye("a claim must name this session's controller")
				return fmt.Errorf("witness: %s of %s sent a bad claim", ctrl, site)
			}
			g, err := c.claim(ctx, site, *m.Claim, log)
			if err != nil {
				return err
			}
			reply.Type, reply.Grant = linkproto.TypeWitnessGrant, &g
		case linkproto.TypeGoodbye:
			return nil
		default:
			continue // a newer controller's request this central does not know
		}
		reply.SentAt = time.Now().UTC()
		if err := linkproto.Write(ctl, reply); err != nil {
			return err
		}
	}
}

// claim decides a claim and logs every grant (400.020) before answering.
func (c *Central) claim(ctx context.Context, site string, cl linkproto.WitnessClaim, log *slog.Logger) (linkproto.WitnessGrant, error) {
	cl.Reason = linkproto.TrimReason(cl.Reason)
	if cl.Epoch == 0 {
		return linkproto.WitnessGrant{Reason: linkproto.RefusedBadClaim}, nil
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	g, prev, err := c.witness.claim(wctx, site, cl, time.Now())
	if err != nil {
		return g, err
	}
	if !g.Granted {
		log.Info("witness refused a claim", "epoch", cl.Epoch, "refused", g.Reason, "holder", g.Holder,
			"holder_epoch", g.HolderEpoch, "claim_reason", cl.Reason)
		return g, nil
	}
	log.Warn("witness granted the active role", "epoch", cl.Epoch, "previous", prev, "reason", cl.Reason, "lsn", cl.LSN)
	if prev == "" {
		prev = "none"
	}
	detail := cl.Reason
	if detail == "" {
		detail = "no reason given"
	}
	if _, err := c.shell.Alarms.Log(wctx, LogWitnessGrant, "subcloud="+site, map[string]string{"subcloud": site,
		"controller": cl.Controller, "epoch": fmt.Sprint(cl.Epoch), "previous": prev, "detail": detail}); err != nil {
		log.Error("logging a witness grant failed", "err", err)
	}
	return g, nil
}
