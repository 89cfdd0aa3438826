// Package imagesync fetches the bytes of central's images to a site: the
// site's half of Glance's web-download import of a petrel-central:// URI
// (docs/central.md, "Images"). Bytes come from central over the site's
// own dial-home link, are appended to DATA_DIR/images/.sync-<sha256>.part
// and synced step by step, with the offset and the running SHA-256 kept in
// an atomically rewritten .sync-<sha256>.state, so a cut link or a restart
// resumes where it stopped (HTTP Range). Only bytes whose whole-file
// SHA-256 matches are moved into the site's image files, and only then do
// their images turn active.
package imagesync

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/errs"
)

// URIPrefix starts every import URI the site accepts: the path is
// central's blob route, reached over the link (never a network address).
const URIPrefix = "petrel-central:///sync/v1/blobs/"

// ParseURI returns the checksum an import URI names; anything but
// petrel-central:///sync/v1/blobs/<sha256> is refused.
func ParseURI(uri string) (string, error) {
	sum, ok := strings.CutPrefix(uri, URIPrefix)
	if !ok || compute.ValidateChecksum("uri", sum) != nil {
		return "", errs.Field("uri", "must be %s<sha256>: the site imports only from central, over its link", URIPrefix)
	}
	return sum, nil
}

// Config configures a Fetcher.
type Config struct {
	Images compute.ImageStore  // required
	Files  *compute.ImageFiles // required
	// Dial opens a stream to central on the site's link; an
	// errs.Unavailable error while the site is not linked.
	Dial func(ctx context.Context) (net.Conn, error)
	// Commit, when set, is held while verified bytes move into Files
	// and their images turn active (the site's image delete holds it too).
	Commit sync.Locker
	// Audit records an image's activation or failure (the site's audit
	// log); nil records nothing.
	Audit    func(ctx context.Context, user, role, action, target, result string)
	Logger   *slog.Logger
	MaxBytes int64         // an image larger is refused; 0: no cap
	Chunk    int           // bytes appended and synced per step; 0: 1 MiB
	Retry    time.Duration // first retry delay; 0: 200 ms (at most 5 s)
	Attempts int           // whole-file checksum failures before giving up; 0: 3
}

// Fetcher runs the site's image transfers: one per checksum at a time, one
// over the link at a time.
type Fetcher struct {
	cfg    Config
	client *http.Client
	link   chan struct{} // one transfer over the link at a time

	mu   sync.Mutex
	jobs map[string]*job // by checksum
	wake chan struct{}
}

// job is the transfer of one checksum's bytes, for the images waiting on it.
type job struct {
	sum     string
	images  []string // IDs, saving
	user    string   // who asked, for the audit record
	started bool
}

// state is the content of .sync-<sum>.state.
type state struct {
	Sum    string   `json:"sum"`
	Size   int64    `json:"size"`   // the blob's size, once central said
	Offset int64    `json:"offset"` // bytes of .part that are synced and hashed
	Hash   []byte   `json:"hash"`   // the running SHA-256 at Offset (encoding.BinaryMarshaler)
	Images []string `json:"images"` // the images waiting for the bytes
	User   string   `json:"user"`
}

// New builds a Fetcher; Run works its transfers.
func New(cfg Config) (*Fetcher, error) {
	if cfg.Images == nil || cfg.Files == nil || cfg.Dial == nil || cfg.Logger == nil {
		return nil, errors.New("imagesync: Images, Files, Dial and Logger are required")
	}
	if cfg.Chunk <= 0 {
		cfg.Chunk = 1 << 20
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 200 * time.Millisecond
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	if cfg.Commit == nil {
		cfg.Commit = &sync.Mutex{}
	}
	tr := &http.Transport{
		DialContext:           func(ctx context.Context, _, _ string) (net.Conn, error) { return cfg.Dial(ctx) },
		DisableKeepAlives:     true, // a stream per request
		ResponseHeaderTimeout: 30 * time.Second,
	}
	return &Fetcher{cfg: cfg, client: &http.Client{Transport: tr}, link: make(chan struct{}, 1),
		jobs: map[string]*job{}, wake: make(chan struct{}, 1)}, nil
}

func (f *Fetcher) partPath(sum string) string {
	return filepath.Join(f.cfg.Files.Dir, ".sync-"+sum+".part")
}
func (f *Fetcher) statePath(sum string) string {
	return filepath.Join(f.cfg.Files.Dir, ".sync-"+sum+".state")
}

// Errors of imports.
var (
	// ErrImageBusy: the image is taking other bytes (an upload, or an
	// import of another checksum).
	ErrImageBusy = errs.New(errs.Conflict, "the image is already taking bytes")
	// errBadBytes: the whole file did not verify; it is fetched again.
	errBadBytes = errors.New("imagesync: the fetched bytes do not verify")
	// errGone: central no longer serves the bytes.
	errGone = errors.New("imagesync: central does not serve these bytes")
)

// Import makes image id take the bytes with checksum sum: at once if the
// site holds them (no transfer), else by a transfer from central that Run
// works in the background. Importing again what is in transfer, or an
// image active with those bytes, changes nothing.
func (f *Fetcher) Import(ctx context.Context, id, sum string) error {
	if err := compute.ValidateChecksum("sum", sum); err != nil {
		return err
	}
	im, err := f.cfg.Images.Image(ctx, id)
	if err != nil {
		return err
	}
	user := ""
	if p, ok := auth.PrincipalFrom(ctx); ok {
		user = p.User
	}
	switch im.Status {
	case compute.ImageActive:
		if im.Checksum == sum {
			return nil
		}
		return fmt.Errorf("%w: image %s is active with other bytes; delete it first", ErrImageBusy, im.Name)
	case compute.ImageSaving:
		f.mu.Lock()
		j := f.jobs[sum]
		waiting := j != nil && slices.Contains(j.images, im.ID)
		f.mu.Unlock()
		if waiting {
			return nil
		}
		return fmt.Errorf("%w: image %s is saving", ErrImageBusy, im.Name)
	case compute.ImageQueued:
	default:
		return fmt.Errorf("%w: image %s is %s", compute.ErrImageTransition, im.Name, im.Status)
	}
	if _, err := f.cfg.Images.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, func(x *compute.Image) {
		x.Checksum = sum
	}); err != nil {
		return err
	}
	if f.cfg.Files.Has(sum) {
		// Once per site: these bytes are here already.
		f.finish(context.WithoutCancel(ctx), sum, []string{im.ID}, user, nil)
		return nil
	}
	f.mu.Lock()
	j := f.jobs[sum]
	if j == nil {
		j = &job{sum: sum, user: user}
		f.jobs[sum] = j
	}
	j.images = append(j.images, im.ID)
	f.mu.Unlock()
	f.poke()
	f.cfg.Logger.Info("image import started", "image", im.Name, "id", im.ID, "checksum", sum)
	return nil
}

func (f *Fetcher) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run works the transfers until ctx ends, starting with those a restart
// interrupted (their state files); every transfer has stopped when it
// returns.
func (f *Fetcher) Run(ctx context.Context) error {
	if err := f.resume(ctx); err != nil {
		f.cfg.Logger.Warn("resuming image transfers failed", "err", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		f.mu.Lock()
		for _, j := range f.jobs {
			if !j.started {
				j.started = true
				wg.Add(1)
				go func() { defer wg.Done(); f.work(ctx, j) }()
			}
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		}
	}
}

// resume picks up the transfers whose state files a restart left: their
// images (queued again by the restart) go back to saving.
func (f *Fetcher) resume(ctx context.Context) error {
	ents, err := os.ReadDir(f.cfg.Files.Dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".sync-") && strings.Contains(name, ".state.tmp") {
			os.Remove(filepath.Join(f.cfg.Files.Dir, name)) // a state write cut by the restart
			continue
		}
		sum, ok := strings.CutSuffix(strings.TrimPrefix(name, ".sync-"), ".state")
		if !ok || !strings.HasPrefix(name, ".sync-") || compute.ValidateChecksum("sum", sum) != nil {
			continue
		}
		st, err := f.loadState(sum)
		if err != nil {
			f.cfg.Logger.Warn("dropping an unreadable transfer state", "checksum", sum, "err", err)
			f.discard(sum)
			continue
		}
		var ids []string
		for _, id := range st.Images {
			im, err := f.cfg.Images.Image(ctx, id)
			if err != nil || im.Checksum != sum {
				continue // deleted, or re-imported with other bytes
			}
			switch im.Status {
			case compute.ImageQueued:
				if _, err := f.cfg.Images.TransitionImage(ctx, id, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
					continue
				}
			case compute.ImageSaving:
			default:
				continue
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			f.discard(sum)
			continue
		}
		f.mu.Lock()
		if f.jobs[sum] == nil {
			f.jobs[sum] = &job{sum: sum, images: ids, user: st.User}
		}
		f.mu.Unlock()
		f.cfg.Logger.Info("image transfer resumes after a restart", "checksum", sum, "offset", st.Offset, "size", st.Size)
	}
	return nil
}

// work runs one transfer to its end: the images active, or (bytes that
// never verify, or that central no longer serves) queued again.
func (f *Fetcher) work(ctx context.Context, j *job) {
	delay, bad := f.cfg.Retry, 0
	for {
		err := f.transfer(ctx, j)
		if ctx.Err() != nil {
			return
		}
		var retry time.Duration
		switch {
		case err == nil:
			f.mu.Lock()
			ids := slices.Clone(j.images)
			delete(f.jobs, j.sum)
			f.mu.Unlock()
			f.finish(ctx, j.sum, ids, j.user, nil)
			return
		case errors.Is(err, errBadBytes):
			if bad++; bad >= f.cfg.Attempts {
				f.giveUp(ctx, j, err)
				return
			}
			f.cfg.Logger.Warn("fetched image bytes did not verify; fetching them again", "checksum", j.sum, "err", err)
			continue
		case errors.Is(err, errGone):
			f.giveUp(ctx, j, err)
			return
		default:
			var ra retryAfter
			if errors.As(err, &ra) {
				retry = time.Duration(ra)
			}
		}
		if retry == 0 {
			retry, delay = delay, min(2*delay, 5*time.Second)
		}
		f.cfg.Logger.Info("image transfer interrupted; retrying", "checksum", j.sum, "err", err, "in", retry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// giveUp ends a transfer that cannot succeed: its images go back to queued
// (central's next import starts over), and nothing is kept.
func (f *Fetcher) giveUp(ctx context.Context, j *job, cause error) {
	f.mu.Lock()
	ids := slices.Clone(j.images)
	delete(f.jobs, j.sum)
	f.mu.Unlock()
	f.discard(j.sum)
	f.finish(ctx, j.sum, ids, j.user, cause)
}

// discard removes a transfer's files.
func (f *Fetcher) discard(sum string) {
	os.Remove(f.partPath(sum))
	os.Remove(f.statePath(sum))
}

// finish moves the waiting images out of saving: active when the bytes
// are stored (cause nil) and in their disk format, else queued.
func (f *Fetcher) finish(ctx context.Context, sum string, ids []string, user string, cause error) {
	var format compute.DiskFormat
	var size int64
	if cause == nil {
		format, size, cause = f.inspect(sum)
	}
	f.cfg.Commit.Lock()
	defer f.cfg.Commit.Unlock()
	for _, id := range ids {
		err := cause
		if err == nil {
			err = f.activate(ctx, id, format, size)
		}
		if err == nil {
			f.cfg.Logger.Info("image imported", "id", id, "checksum", sum, "size", size)
			f.audit(ctx, user, "importImage", id, "success")
			continue
		}
		if _, terr := f.cfg.Images.TransitionImage(ctx, id, compute.ImageSaving, compute.ImageQueued, nil); terr != nil {
			f.cfg.Logger.Error("an image import failed; leaving saving failed too", "id", id, "err", terr)
		}
		f.cfg.Logger.Warn("image import failed; the image is queued again", "id", id, "checksum", sum, "err", err)
		f.audit(ctx, user, "importImage", id, "failed: "+err.Error())
	}
}

// activate turns a saving image active with the stored bytes, if they are
// in its disk format.
func (f *Fetcher) activate(ctx context.Context, id string, format compute.DiskFormat, size int64) error {
	im, err := f.cfg.Images.Image(ctx, id)
	if err != nil {
		return err
	}
	if im.DiskFormat != format {
		return fmt.Errorf("%w: the bytes are %s, image %s says %s", compute.ErrFormatMismatch, format, im.Name, im.DiskFormat)
	}
	_, err = f.cfg.Images.TransitionImage(ctx, id, compute.ImageSaving, compute.ImageActive, func(x *compute.Image) { x.Size = size })
	return err
}

func (f *Fetcher) audit(ctx context.Context, user, action, id, result string) {
	if f.cfg.Audit != nil {
		f.cfg.Audit(ctx, user, string(auth.Admin), action, "image/"+id, result)
	}
}

// inspect reads a stored file's format and size.
func (f *Fetcher) inspect(sum string) (compute.DiskFormat, int64, error) {
	fh, err := os.Open(f.cfg.Files.Path(sum))
	if err != nil {
		return "", 0, fmt.Errorf("imagesync: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("imagesync: %w", err)
	}
	head := make([]byte, len(compute.QCOW2Magic))
	n, _ := io.ReadFull(fh, head)
	return compute.DetectFormat(head[:n]), st.Size(), nil
}

func (f *Fetcher) loadState(sum string) (state, error) {
	b, err := os.ReadFile(f.statePath(sum))
	if err != nil {
		return state{}, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return state{}, err
	}
	if st.Sum != sum || st.Offset < 0 {
		return state{}, errors.New("imagesync: state names other bytes")
	}
	return st, nil
}

func (f *Fetcher) saveState(st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.Write(f.statePath(st.Sum), b, 0o600)
}

// retryAfter: central is busy; try again after this long.
type retryAfter time.Duration

func (r retryAfter) Error() string {
	return fmt.Sprintf("central is busy; retry after %s", time.Duration(r))
}

// transfer fetches j's bytes from where its state file says, appending
// and syncing each step, and moves the verified file into place. It
// returns nil once the bytes are stored; errBadBytes when the whole file
// did not verify (its partial file is gone: the next try starts over);
// other errors are a cut link or a busy central, and the next try resumes.
func (f *Fetcher) transfer(ctx context.Context, j *job) error {
	if f.cfg.Files.Has(j.sum) {
		f.discard(j.sum)
		return nil
	}
	select {
	case f.link <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-f.link }()

	f.mu.Lock()
	st := state{Sum: j.sum, Images: slices.Clone(j.images), User: j.user}
	f.mu.Unlock()
	h := sha256.New()
	if old, err := f.loadState(j.sum); err == nil && old.Offset > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(old.Hash); err == nil {
			st.Offset, st.Size = old.Offset, old.Size
		} else {
			h = sha256.New()
		}
	}
	part, err := os.OpenFile(f.partPath(j.sum), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("imagesync: %w", err)
	}
	defer part.Close()
	// Bytes past the recorded offset were written but not recorded.
	if err := part.Truncate(st.Offset); err != nil {
		return fmt.Errorf("imagesync: %w", err)
	}
	if _, err := part.Seek(st.Offset, io.SeekStart); err != nil {
		return fmt.Errorf("imagesync: %w", err)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://central/sync/v1/blobs/"+j.sum, nil)
	if err != nil {
		return err
	}
	if st.Offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", st.Offset))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return fmt.Errorf("imagesync: fetching %s: %w", j.sum, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if st.Offset > 0 { // the range was not honoured: from the start
			if err := part.Truncate(0); err != nil {
				return fmt.Errorf("imagesync: %w", err)
			}
			if _, err := part.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("imagesync: %w", err)
			}
			st.Offset, h = 0, sha256.New()
		}
		st.Size = resp.ContentLength
	case http.StatusPartialContent:
		from, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || from != st.Offset {
			return fmt.Errorf("imagesync: central answered range %q for offset %d", resp.Header.Get("Content-Range"), st.Offset)
		}
		st.Size = total
	case http.StatusRequestedRangeNotSatisfiable:
		// Everything was fetched before the cut: verify below.
		if st.Size <= 0 || st.Offset != st.Size {
			return f.restart(j.sum, fmt.Errorf("%w: central has fewer bytes than the %d held", errBadBytes, st.Offset))
		}
		resp.Body = http.NoBody
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s", errGone, j.sum)
	case http.StatusServiceUnavailable:
		d := time.Second
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
			d = time.Duration(n) * time.Second
		}
		return retryAfter(d)
	default:
		return fmt.Errorf("imagesync: central answered %s", resp.Status)
	}
	if st.Size <= 0 {
		return fmt.Errorf("imagesync: central did not say the size of %s", j.sum)
	}
	if f.cfg.MaxBytes > 0 && st.Size > f.cfg.MaxBytes {
		return f.restart(j.sum, fmt.Errorf("%w: %d bytes, more than the site's cap of %d", errGone, st.Size, f.cfg.MaxBytes))
	}
	buf := make([]byte, f.cfg.Chunk)
	for st.Offset < st.Size {
		n, rerr := io.ReadFull(resp.Body, buf[:min(int64(len(buf)), st.Size-st.Offset)])
		if n > 0 {
			if _, err := part.Write(buf[:n]); err != nil {
				return fmt.Errorf("imagesync: %w", err)
			}
			if err := part.Sync(); err != nil {
				return fmt.Errorf("imagesync: %w", err)
			}
			h.Write(buf[:n])
			st.Offset += int64(n)
			f.mu.Lock()
			st.Images = slices.Clone(j.images)
			f.mu.Unlock()
			if st.Hash, err = h.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
				return err
			}
			if err := f.saveState(st); err != nil {
				return fmt.Errorf("imagesync: %w", err)
			}
		}
		if rerr != nil && st.Offset < st.Size {
			return fmt.Errorf("imagesync: the transfer of %s was cut at %d of %d bytes: %w", j.sum, st.Offset, st.Size, rerr)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != j.sum {
		return f.restart(j.sum, fmt.Errorf("%w: got sha256 %s", errBadBytes, got))
	}
	if err := part.Close(); err != nil {
		return fmt.Errorf("imagesync: %w", err)
	}
	f.cfg.Commit.Lock()
	err = os.Rename(f.partPath(j.sum), f.cfg.Files.Path(j.sum))
	f.cfg.Commit.Unlock()
	if err != nil {
		return fmt.Errorf("imagesync: %w", err)
	}
	if d, err := os.Open(f.cfg.Files.Dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	os.Remove(f.statePath(j.sum))
	return nil
}

// restart drops a transfer's files so the next try starts over, and
// returns err.
func (f *Fetcher) restart(sum string, err error) error {
	f.discard(sum)
	return err
}

// parseContentRange reads "bytes FROM-TO/TOTAL".
func parseContentRange(v string) (from, total int64, ok bool) {
	rng, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, false
	}
	span, tot, ok := strings.Cut(rng, "/")
	if !ok {
		return 0, 0, false
	}
	a, _, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, false
	}
	from, err1 := strconv.ParseInt(a, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return from, total, err1 == nil && err2 == nil && from >= 0 && total > 0
}
