package central

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/petrel-edge/petrel/internal/rest"
)

// cachedRegistry is the subcloud registry with every subcloud also held
// in memory: reads (the API's lists and gets, the dashboard's fleet page,
// the engines) never reach the database, which at 10,000 sites is busy
// with the links' writes (T10: reads p99 ≤ 50 ms at 2,000 req/s while
// holding the fleet). The database stays the truth: every write goes to
// it first, in its transaction, and the copy takes what was committed.
//
// Writes are serialised (wmu, held across the database call), so the copy
// takes them in commit order. That costs little: the links' writes are
// batched (linkwriter.go) and the sync engine's too. Central is the only
// writer of its registry (a pair runs Central on its leader alone), so the
// copy read at start stays current.
type cachedRegistry struct {
	db SubcloudStore

	wmu sync.Mutex // serialises writes (database, then the copy)

	mu     sync.RWMutex
	byName map[string]entry
	names  []string // sorted (byte order)
}

// entry is one subcloud as committed and its JSON, encoded once per
// write: the API's reads send it as it is (encoding 50 subclouds per list
// read was a quarter of central's CPU at 2,000 reads/s).
type entry struct {
	sc  Subcloud
	doc []byte
}

func newEntry(sc Subcloud) entry {
	sc = clone(sc)
	doc, err := json.Marshal(sc)
	if err != nil {
		doc = nil // encoded per read instead (never: Subcloud always encodes)
	}
	return entry{sc: sc, doc: doc}
}

var _ SubcloudStore = (*cachedRegistry)(nil)

// CacheSubclouds returns db's registry with an in-memory copy of every
// subcloud serving the reads. Nothing else may write db's registry while
// the returned store is in use.
func CacheSubclouds(ctx context.Context, db SubcloudStore) (SubcloudStore, error) {
	c := &cachedRegistry{db: db}
	if err := c.reload(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads every subcloud from the database (at start, and after a
// group rename moved members).
func (c *cachedRegistry) reload(ctx context.Context) error {
	byName := map[string]entry{}
	opts := rest.ListOptions{Limit: rest.MaxLimit}
	for {
		scs, next, err := c.db.Subclouds(ctx, opts)
		if err != nil {
			return fmt.Errorf("central: read the registry: %w", err)
		}
		for _, sc := range scs {
			byName[sc.Name] = newEntry(sc)
		}
		if next == "" {
			break
		}
		opts.After = next
	}
	names := slices.Sorted(maps.Keys(byName))
	c.mu.Lock()
	c.byName, c.names = byName, names
	c.mu.Unlock()
	return nil
}

// put takes committed subclouds into the copy (c.wmu held). They are
// encoded before the lock: readers never wait for a batch's encoding.
func (c *cachedRegistry) put(scs ...Subcloud) {
	es := make([]entry, len(scs))
	for i, sc := range scs {
		es[i] = newEntry(sc)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range es {
		if _, ok := c.byName[e.sc.Name]; !ok {
			i, _ := slices.BinarySearch(c.names, e.sc.Name)
			c.names = slices.Insert(c.names, i, e.sc.Name)
		}
		c.byName[e.sc.Name] = e
	}
}

// clone copies sc's maps and pointers: neither the copy nor a caller may
// change the other's.
func clone(sc Subcloud) Subcloud {
	sc.BootstrapValues = maps.Clone(sc.BootstrapValues)
	sc.Sync = maps.Clone(sc.Sync)
	sc.Hosts.ByAvailability = maps.Clone(sc.Hosts.ByAvailability)
	if sc.Certificate != nil {
		c := *sc.Certificate
		sc.Certificate = &c
	}
	if sc.LastSeen != nil {
		t := *sc.LastSeen
		sc.LastSeen = &t
	}
	return sc
}

func (c *cachedRegistry) Subcloud(_ context.Context, name string) (Subcloud, error) {
	c.mu.RLock()
	e, ok := c.byName[name]
	c.mu.RUnlock()
	if !ok {
		return Subcloud{}, fmt.Errorf("%w: %s", ErrSubcloudNotFound, name)
	}
	return clone(e.sc), nil
}

// subcloudJSON is the named subcloud's JSON as the API sends it.
func (c *cachedRegistry) subcloudJSON(name string) ([]byte, error) {
	c.mu.RLock()
	e, ok := c.byName[name]
	c.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrSubcloudNotFound, name)
	}
	if e.doc == nil {
		return json.Marshal(e.sc)
	}
	return e.doc, nil
}

// Subclouds lists as the database store does: by name, after opts.After,
// at most opts.Limit, exact-match filters.
func (c *cachedRegistry) Subclouds(_ context.Context, opts rest.ListOptions) ([]Subcloud, string, error) {
	var out []Subcloud
	next := c.walk(opts, func(e entry) { out = append(out, clone(e.sc)) })
	if out == nil {
		out = []Subcloud{}
	}
	return out, next, nil
}

// subcloudsJSON is Subclouds as the API sends it: the JSON of
// {"items": [...], "next_page_token": ...}.
func (c *cachedRegistry) subcloudsJSON(opts rest.ListOptions) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"items":[`)
	n := 0
	var err error
	next := c.walk(opts, func(e entry) {
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		doc := e.doc
		if doc == nil {
			var merr error
			if doc, merr = json.Marshal(e.sc); merr != nil {
				err = merr
			}
		}
		b.Write(doc)
	})
	if err != nil {
		return nil, err
	}
	tok, err := json.Marshal(rest.EncodePageToken(next))
	if err != nil {
		return nil, err
	}
	b.WriteString(`],"next_page_token":`)
	b.Write(tok)
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// walk calls fn on each subcloud of the page opts asks for, in name order,
// and returns the name to continue after ("" on the last page).
func (c *cachedRegistry) walk(opts rest.ListOptions, fn func(entry)) string {
	match := func(sc *Subcloud) bool {
		for f, v := range opts.Filters {
			var got string
			switch f {
			case "shape":
				got = string(sc.Shape)
			case "availability":
				got = string(sc.Availability)
			case "management":
				got = string(sc.Management)
			case "status":
				got = string(sc.Status)
			case "deploy_status":
				got = string(sc.DeployStatus)
			case "group":
				got = sc.Group
			default:
				continue // not a filter of this list (the database store ignores it too)
			}
			if got != v {
				return false
			}
		}
		return true
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = rest.MaxLimit
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	i := 0
	if opts.After != "" {
		i = sort.SearchStrings(c.names, opts.After)
		if i < len(c.names) && c.names[i] == opts.After {
			i++
		}
	}
	n, last := 0, ""
	for ; i < len(c.names); i++ {
		e := c.byName[c.names[i]]
		if !match(&e.sc) {
			continue
		}
		if n == limit {
			return last
		}
		fn(e)
		n, last = n+1, e.sc.Name
	}
	return ""
}

func (c *cachedRegistry) CreateSubcloud(ctx context.Context, s Subcloud) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.db.CreateSubcloud(ctx, s); err != nil {
		return err
	}
	// The stored form (defaults, times): read back once.
	sc, err := c.db.Subcloud(ctx, s.Name)
	if err != nil {
		return c.reloadAfter(ctx, err)
	}
	c.put(sc)
	return nil
}

// reloadAfter re-reads the whole registry after a write whose result
// could not be read back (committed, but the copy would miss it).
func (c *cachedRegistry) reloadAfter(ctx context.Context, cause error) error {
	if err := c.reload(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("central: the registry copy is stale (%v): %w", cause, err)
	}
	return nil
}

func (c *cachedRegistry) UpdateSubcloud(ctx context.Context, name string, fn func(*Subcloud) error) (Subcloud, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	sc, err := c.db.UpdateSubcloud(ctx, name, fn)
	if err != nil {
		return sc, err
	}
	c.put(sc)
	return sc, nil
}

func (c *cachedRegistry) UpdateSubclouds(ctx context.Context, names []string, fn func(*Subcloud) error) ([]Subcloud, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	scs, err := c.db.UpdateSubclouds(ctx, names, fn)
	if err != nil {
		return nil, err
	}
	c.put(scs...)
	return scs, nil
}

func (c *cachedRegistry) DeleteSubcloud(ctx context.Context, name string, check func(Subcloud) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.db.DeleteSubcloud(ctx, name, check); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.byName, name)
	if i, ok := slices.BinarySearch(c.names, name); ok {
		c.names = slices.Delete(c.names, i, i+1)
	}
	c.mu.Unlock()
	return nil
}

func (c *cachedRegistry) SubcloudGroup(ctx context.Context, name string) (SubcloudGroup, error) {
	return c.db.SubcloudGroup(ctx, name)
}

func (c *cachedRegistry) SubcloudGroups(ctx context.Context, opts rest.ListOptions) ([]SubcloudGroup, string, error) {
	return c.db.SubcloudGroups(ctx, opts)
}

func (c *cachedRegistry) CreateSubcloudGroup(ctx context.Context, g SubcloudGroup) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.db.CreateSubcloudGroup(ctx, g)
}

// UpdateSubcloudGroup: a rename moves the group's members (their group
// column) in the database; the copy is then read again.
func (c *cachedRegistry) UpdateSubcloudGroup(ctx context.Context, name string, fn func(*SubcloudGroup) error) (SubcloudGroup, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	g, err := c.db.UpdateSubcloudGroup(ctx, name, fn)
	if err != nil {
		return g, err
	}
	if g.Name != name {
		if err := c.reloadAfter(ctx, nil); err != nil {
			return g, err
		}
	}
	return g, nil
}

func (c *cachedRegistry) DeleteSubcloudGroup(ctx context.Context, name string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.db.DeleteSubcloudGroup(ctx, name)
}
