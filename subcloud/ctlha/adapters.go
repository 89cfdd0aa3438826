package ctlha

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/hostmgr/bmc"
	"github.com/petrel-edge/petrel/internal/linkproto"
	"github.com/petrel-edge/petrel/internal/pgrepl"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/servicemgr/sqlledger"
	"github.com/petrel-edge/petrel/subcloud"
	"github.com/petrel-edge/petrel/subcloud/witness"
)

// witnessView adapts the central witness client (subcloud/witness).
type witnessView struct{ c *witness.Client }

// NewWitness wraps this controller's witness session for the runner.
func NewWitness(c *witness.Client) WitnessClient { return witnessView{c} }

func (w witnessView) Set(role string, epoch, lsn uint64) {
	w.c.Set(witness.Role(role), epoch, lsn)
}

// View reads the witness's last answer: reachable, and its verdict on the
// peer (its lease expired: lost; renewing: alive).
func (w witnessView) View(peer string) (bool, Verdict, string, uint64, time.Time) {
	st, reachable, at := w.c.State()
	if !reachable {
		return false, VerdictUnknown, st.Holder, st.HolderEpoch, at
	}
	v := VerdictUnknown
	switch p := st.Peer; {
	case p == nil || p.Name != peer:
		// Central has never heard the peer: its lease is as good as
		// expired once central has been up a lease long (central says
		// so through LeaseExpired when it knows the peer).
		v = VerdictUnknown
	case p.LeaseExpired:
		v = VerdictPeerLost
	default:
		v = VerdictPeerAlive
	}
	return true, v, st.Holder, st.HolderEpoch, at
}

func (w witnessView) Claim(ctx context.Context, epoch, lsn uint64, peerOff bool, reason string) (bool, string, error) {
	g, err := w.c.ClaimWith(ctx, linkproto.WitnessClaim{Epoch: epoch, LSN: lsn, Reason: reason, PeerPowerOff: peerOff})
	if err != nil {
		return false, "", err
	}
	return g.Granted, g.Reason, nil
}

// bmcPower adapts a BMC client (hostmgr/bmc) to PowerControl.
type bmcPower struct{ c *bmc.Client }

// NewBMCPower wraps the peer's BMC client for the runner.
func NewBMCPower(c *bmc.Client) PowerControl { return bmcPower{c} }

func (b bmcPower) PowerState(ctx context.Context) (Power, error) {
	st, err := b.c.PowerState(ctx)
	if err != nil {
		return PowerUnknown, err
	}
	switch st {
	case bmc.PowerOn:
		return PowerOn, nil
	case bmc.PowerOff:
		return PowerOff, nil
	}
	return PowerUnknown, errors.New("ctlha: the BMC reports an unknown power state")
}

func (b bmcPower) PowerOff(ctx context.Context) error { return b.c.PowerOff(ctx) }
func (b bmcPower) PowerOn(ctx context.Context) error  { return b.c.PowerOn(ctx) }

// pgNode adapts pgrepl.Node (Rejoin also reports its path).
type pgNode struct{ *pgrepl.Node }

func (n pgNode) Rejoin(ctx context.Context, p pgrepl.Peer) error {
	_, err := n.Node.Rejoin(ctx, p)
	return err
}

func (n pgNode) Follow(ctx context.Context, p pgrepl.Peer) error {
	_, err := n.Node.Follow(ctx, p)
	return err
}

// siteOf adapts a site controller to Site.
type siteOf struct {
	s     *subcloud.Subcloud
	close func() // after Run: what the site's start opened besides it
}

func (s siteOf) Run(ctx context.Context) error {
	defer s.close()
	return s.s.Run(ctx)
}
func (s siteOf) Alarms() *faultmgr.Manager { return s.s.Shell().Alarms }
func (s siteOf) Close() {
	s.s.Shell().Close()
	s.close()
}

// openLedger is a duplex site's service ledger: in the replicated
// database, each write checking the pair's epoch row in its transaction.
// db, when set, is the store opened already.
func openLedger(ctx context.Context, dsn string, db *sqldb.DB, ha *subcloud.HAConfig) (*sqlledger.Ledger, func(), error) {
	if db == nil {
		var err error
		if db, err = sqldb.Open(ctx, dsn); err != nil {
			return nil, nil, err
		}
	}
	guard := func(ctx context.Context, tx *sqldb.DB) error {
		if err := ha.Authority(); err != nil {
			return fmt.Errorf("%w: %v", subcloud.ErrDeposed, err)
		}
		var epoch uint64
		if err := tx.WithContext(ctx).Raw("SELECT epoch FROM " + subcloud.EpochTable + " WHERE id = 1").Scan(&epoch).Error; err != nil {
			return err
		}
		if epoch != ha.Epoch() {
			return fmt.Errorf("%w: the database is at epoch %d, this controller holds %d", subcloud.ErrDeposed, epoch, ha.Epoch())
		}
		return nil
	}
	l, err := sqlledger.Open(ctx, sqlledger.Config{DB: db, Guard: guard})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return l, func() { db.Close() }, nil
}
