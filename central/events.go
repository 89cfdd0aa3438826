package central

import (
	"context"
	"errors"
	"fmt"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
)

// ErrBadRecords reports records a site may not send: about another site,
// or out of sequence.
var ErrBadRecords = errors.New("central: site records refused")

// eventCursor is where site's event log resumes: central's cursor in the
// site's epoch, or 0 once the site's log starts over (a site rebuilt with
// an empty store), which drops the site's alarms held here.
func (c *Central) eventCursor(ctx context.Context, site, epoch string, siteLast uint64) (uint64, error) {
	if epoch == "" {
		return 0, nil // a site that ships no log
	}
	log := c.shell.FaultLog
	held, seq, err := log.SiteCursor(ctx, site)
	if err != nil {
		return 0, err
	}
	if held == epoch && siteLast >= seq {
		return seq, nil
	}
	if held == epoch {
		// The site's log went back (its store restored from a backup):
		// its new records would reuse numbers central has applied. Start
		// over; events central holds are skipped by their UUIDs.
		c.log.Warn("site's event log is behind central's cursor; taking it again from the start", "site", site,
			"site_last", siteLast, "cursor", seq)
		return 0, c.resetSiteLog(ctx, site, epoch)
	}
	if held != "" {
		c.log.Warn("site's event log started over; dropping its alarms held here", "site", site, "epoch", epoch, "was", held)
	}
	return 0, c.resetSiteLog(ctx, site, epoch)
}

// resetSiteLog starts site's log over in epoch through the ingest, so a
// storm of new links commits together instead of one transaction each
// (measured: 1 s a link at 64 links admitted at once, one at a time).
func (c *Central) resetSiteLog(ctx context.Context, site, epoch string) error {
	r, err := c.ingest.Apply(ctx, faultdb.SiteBatch{Site: site, Epoch: epoch, Reset: true})
	if err != nil {
		return err
	}
	return r.Err
}

// applyEvents applies records of site's log exactly once, in order, and
// returns how far central now holds it. Records about another site or out
// of sequence are refused whole and alarmed (280.005).
func (c *Central) applyEvents(ctx context.Context, site, epoch string, recs []faultmgr.Record) (uint64, error) {
	if epoch == "" {
		return 0, c.refuse(ctx, site, "records without an epoch in the hello")
	}
	var prev uint64
	for _, r := range recs {
		switch {
		case r.Event.Site != "" && r.Event.Site != site:
			return 0, c.refuse(ctx, site, fmt.Sprintf("a record about site %q", r.Event.Site))
		case r.Seq <= prev:
			return 0, c.refuse(ctx, site, fmt.Sprintf("sequence %d after %d", r.Seq, prev))
		case !r.Event.Type.Valid() || r.Event.UUID == "":
			return 0, c.refuse(ctx, site, fmt.Sprintf("record %d is not an event", r.Seq))
		}
		prev = r.Seq
	}
	r, err := c.ingest.Apply(ctx, faultdb.SiteBatch{Site: site, Epoch: epoch, Records: recs,
		Ops: faultmgr.SiteOps(c.shell.Alarms.Catalog(), recs)})
	if err != nil {
		return 0, err
	}
	if r.Err != nil {
		return 0, fmt.Errorf("applying %s's records: %w", site, r.Err)
	}
	if r.Missing > 0 {
		c.log.Warn("a site's history has a gap at central", "site", site, "from", r.GapFrom, "missing", r.Missing)
		if _, err := c.shell.Alarms.Log(ctx, "280.006", "subcloud="+site, map[string]string{"subcloud": site,
			"missing": fmt.Sprint(r.Missing), "from": fmt.Sprint(r.GapFrom)}); err != nil {
			c.log.Error("logging 280.006 failed", "site", site, "err", err)
		}
	}
	return r.Applied, nil
}
func (c *Central) refuse(ctx context.Context, site, detail string) error {
	c.log.Warn("refused a site's records", "site", site, "detail", detail)
	if _, _, err := c.shell.Alarms.Raise(ctx, "280.005", "subcloud="+site, map[string]string{"detail": detail}); err != nil {
		c.log.Error("raising 280.005 failed", "site", site, "err", err)
	}
	return fmt.Errorf("%w: %s", ErrBadRecords, detail)
}
