package faultdb

import "context"

// Ingest combines sites' batches that arrive together into one
// transaction: what is queued when a transaction starts goes into it. There
// is no timer, so an idle central adds no delay and a busy one commits many
// sites at once. Callers send one batch per site at a time (a link waits
// for its answer), so a site's batches apply in order.
type Ingest struct {
	store *Store
	in    chan ingestReq
}

type ingestReq struct {
	b     SiteBatch
	reply chan SiteResult
}

// MaxIngest bounds the records of one combined transaction.
const MaxIngest = 5000

// NewIngest returns an Ingest writing to s; Run must be running.
func NewIngest(s *Store) *Ingest { return &Ingest{store: s, in: make(chan ingestReq, 1024)} }

// Apply applies b with whatever else is queued, and returns its result.
func (g *Ingest) Apply(ctx context.Context, b SiteBatch) (SiteResult, error) {
	req := ingestReq{b: b, reply: make(chan SiteResult, 1)}
	select {
	case g.in <- req:
	case <-ctx.Done():
		return SiteResult{}, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r, nil
	case <-ctx.Done():
		return SiteResult{}, ctx.Err() // it may still commit; the site resends and the cursor skips it
	}
}

// Run applies queued batches until ctx ends.
func (g *Ingest) Run(ctx context.Context) error {
	for {
		var reqs []ingestReq
		select {
		case <-ctx.Done():
			return nil
		case r := <-g.in:
			reqs = append(reqs, r)
		}
		n := len(reqs[0].b.Records)
	more:
		for n < MaxIngest {
			select {
			case r := <-g.in:
				reqs = append(reqs, r)
				n += len(r.b.Records)
			default:
				break more
			}
		}
		batches := make([]SiteBatch, len(reqs))
		for i, r := range reqs {
			batches[i] = r.b
		}
		res, err := g.store.ApplySites(context.WithoutCancel(ctx), batches)
		if err != nil && len(reqs) > 1 {
			// One site's batch must not fail the others: apply each alone.
			res, err = make([]SiteResult, len(reqs)), nil
			for i, b := range batches {
				one, oerr := g.store.ApplySites(context.WithoutCancel(ctx), []SiteBatch{b})
				if oerr != nil {
					res[i] = SiteResult{Err: oerr}
				} else {
					res[i] = one[0]
				}
			}
		}
		for i, r := range reqs {
			if err != nil {
				r.reply <- SiteResult{Err: err}
			} else {
				r.reply <- res[i]
			}
		}
	}
}
