package imagesync_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/subcloud/imagesync"
)

const chunk = 64 << 10

// blobServer plays central's blob route for one blob, with faults.
type blobServer struct {
	data []byte
	sum  string

	mu       sync.Mutex
	cutAt    int64 // abort the next response after this many body bytes; 0: none
	holdAt   int64 // instead hold the next response there until the client goes
	corrupt  int   // flip a byte in this many more responses
	requests []string
	served   atomic.Int64
}

func newBlob(t *testing.T, size int) *blobServer {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	data[0] = 0 // raw, never qcow2's magic
	s := sha256.Sum256(data)
	return &blobServer{data: data, sum: hex.EncodeToString(s[:])}
}

func (b *blobServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/sync/v1/blobs/"+b.sum {
		http.NotFound(w, r)
		return
	}
	b.mu.Lock()
	b.requests = append(b.requests, r.Header.Get("Range"))
	cut, hold, corrupt := b.cutAt, b.holdAt, b.corrupt > 0
	b.cutAt, b.holdAt = 0, 0
	if corrupt {
		b.corrupt--
	}
	b.mu.Unlock()
	data := b.data
	if corrupt {
		data = bytes.Clone(data)
		data[len(data)/2] ^= 0xff
	}
	from := int64(0)
	if rg := r.Header.Get("Range"); rg != "" {
		fmt.Sscanf(rg, "bytes=%d-", &from)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(data)-1, len(data)))
		w.Header().Set("Content-Length", fmt.Sprint(int64(len(data))-from))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	}
	body := data[from:]
	if stop := max(cut, hold); stop > 0 && stop < int64(len(body)) {
		n, _ := w.Write(body[:stop])
		b.served.Add(int64(n))
		w.(http.Flusher).Flush()
		if hold > 0 {
			<-r.Context().Done()
		}
		panic(http.ErrAbortHandler) // the link is cut
	}
	n, _ := w.Write(body)
	b.served.Add(int64(n))
}

// rig is a site's image store and files with a fetcher dialing blob.
type rig struct {
	t     *testing.T
	ctx   context.Context
	store *computedb.Store
	dir   string
	blob  *blobServer
	url   string
	audit atomic.Int32
}

func newRig(t *testing.T, blob *blobServer) *rig {
	t.Helper()
	ctx := context.Background()
	store, err := computedb.Open(ctx, sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(blob)
	t.Cleanup(ts.Close)
	return &rig{t: t, ctx: ctx, store: store, dir: t.TempDir(), blob: blob, url: ts.Listener.Addr().String()}
}

// fetcher opens the image files (as a site's start does) and starts a
// fetcher; stop ends its Run and waits for it.
func (r *rig) fetcher() (f *imagesync.Fetcher, stop func()) {
	r.t.Helper()
	files, err := compute.OpenImageFiles(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	f, err = imagesync.New(imagesync.Config{Images: r.store, Files: files, Chunk: chunk, Retry: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
		Dial:   func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", r.url) },
		Audit:  func(context.Context, string, string, string, string, string) { r.audit.Add(1) }})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	r.t.Cleanup(stop)
	return f, stop
}

func (r *rig) image(name string) compute.Image {
	r.t.Helper()
	im, err := r.store.CreateImage(r.ctx, compute.Image{Name: name, DiskFormat: compute.FormatRaw, Visibility: compute.Public,
		Project: "admin"})
	if err != nil {
		r.t.Fatal(err)
	}
	return im
}

// wait polls image id until cond holds (10 s at most).
func (r *rig) wait(id, what string, cond func(compute.Image) bool) compute.Image {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var im compute.Image
	for time.Now().Before(deadline) {
		var err error
		if im, err = r.store.Image(r.ctx, id); err == nil && cond(im) {
			return im
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	r.t.Fatalf("image %s never %s; last %+v", id, what, im)
	return im
}

func active(im compute.Image) bool { return im.Status == compute.ImageActive }

// checkStored: the site's file is the blob, and no transfer file is left.
func (r *rig) checkStored() {
	r.t.Helper()
	got, err := os.ReadFile(filepath.Join(r.dir, r.blob.sum))
	if err != nil || !bytes.Equal(got, r.blob.data) {
		r.t.Fatalf("stored file: %d bytes, %v; want the blob's %d", len(got), err, len(r.blob.data))
	}
	if left, _ := filepath.Glob(filepath.Join(r.dir, ".sync-*")); len(left) > 0 {
		r.t.Errorf("transfer files left: %v", left)
	}
}

// TestResumeAfterCut: a link cut at 40 % resumes from there with Range;
// the bytes moved stay under 1.5 × the size.
func TestResumeAfterCut(t *testing.T) {
	blob := newBlob(t, 4<<20)
	cut := 40 * int64(len(blob.data)) / 100 / chunk * chunk
	blob.cutAt = cut
	r := newRig(t, blob)
	f, _ := r.fetcher()
	im := r.image("cirros")
	if err := f.Import(r.ctx, im.ID, blob.sum); err != nil {
		t.Fatal(err)
	}
	got := r.wait(im.ID, "active", active)
	if got.Checksum != blob.sum || got.Size != int64(len(blob.data)) {
		t.Errorf("active image = %+v", got)
	}
	r.checkStored()
	if moved, size := blob.served.Load(), int64(len(blob.data)); moved >= size*3/2 {
		t.Errorf("moved %d bytes for %d; want < 1.5 × size", moved, size)
	}
	blob.mu.Lock()
	defer blob.mu.Unlock()
	if len(blob.requests) != 2 || blob.requests[1] != fmt.Sprintf("bytes=%d-", cut) {
		t.Errorf("requests (Range headers) = %q; want a full one, then one from %d", blob.requests, cut)
	}
	if r.audit.Load() != 1 {
		t.Errorf("%d audit records; want 1", r.audit.Load())
	}
	// Importing again what is active changes nothing.
	if err := f.Import(r.ctx, im.ID, blob.sum); err != nil {
		t.Errorf("import of an active image again: %v", err)
	}
}

// TestResumeAfterRestart: a site stopped mid-transfer resumes from its state
// file once started again (the start's cleanup keeps transfer files).
func TestResumeAfterRestart(t *testing.T) {
	blob := newBlob(t, 4<<20)
	hold := 40 * int64(len(blob.data)) / 100 / chunk * chunk
	blob.holdAt = hold
	r := newRig(t, blob)
	f, stop := r.fetcher()
	im := r.image("cirros")
	if err := f.Import(r.ctx, im.ID, blob.sum); err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join(r.dir, ".sync-"+blob.sum+".state")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st struct{ Offset int64 }
		if b, err := os.ReadFile(statePath); err == nil && json.Unmarshal(b, &st) == nil && st.Offset == hold {
			break
		}
		if time.Now().After(deadline) {
			b, err := os.ReadFile(statePath)
			ents, _ := os.ReadDir(r.dir)
			t.Fatalf("the state file never reached the cut: %.200s %v %v %d", b, err, ents, blob.served.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	stop() // the site stops
	// It starts again: uploads cut by the restart are requeued, temporary
	// files cleaned up; the transfer picks up where it was.
	if _, err := r.store.RequeueSaving(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.fetcher()
	r.wait(im.ID, "active", active)
	r.checkStored()
	if moved, size := blob.served.Load(), int64(len(blob.data)); moved >= size*3/2 {
		t.Errorf("moved %d bytes for %d; want < 1.5 × size", moved, size)
	}
	blob.mu.Lock()
	defer blob.mu.Unlock()
	if last := blob.requests[len(blob.requests)-1]; last != fmt.Sprintf("bytes=%d-", hold) {
		t.Errorf("the resumed request asked %q; want bytes=%d-", last, hold)
	}
}

// TestCorruptBytesRefetched: bytes that do not verify are fetched again,
// never activated; bytes that never verify leave the image queued.
func TestCorruptBytesRefetched(t *testing.T) {
	blob := newBlob(t, 1<<20)
	blob.corrupt = 1
	r := newRig(t, blob)
	f, _ := r.fetcher()
	im := r.image("once-bad")
	if err := f.Import(r.ctx, im.ID, blob.sum); err != nil {
		t.Fatal(err)
	}
	r.wait(im.ID, "active", active)
	r.checkStored()

	bad := newBlob(t, 1<<20)
	bad.corrupt = 1000
	r2 := newRig(t, bad)
	f2, _ := r2.fetcher()
	im2 := r2.image("always-bad")
	if err := f2.Import(r2.ctx, im2.ID, bad.sum); err != nil {
		t.Fatal(err)
	}
	got := r2.wait(im2.ID, "queued again", func(im compute.Image) bool { return im.Status == compute.ImageQueued })
	if got.Status == compute.ImageActive {
		t.Fatal("bad bytes activated")
	}
	if _, err := os.Stat(filepath.Join(r2.dir, bad.sum)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bad bytes stored: %v", err)
	}
	bad.mu.Lock()
	n := len(bad.requests)
	bad.mu.Unlock()
	if n != 3 {
		t.Errorf("%d fetches of bytes that never verify; want 3", n)
	}
}

// TestHeldBytesNoTransfer: a site holding the bytes activates at once.
func TestHeldBytesNoTransfer(t *testing.T) {
	blob := newBlob(t, 256<<10)
	r := newRig(t, blob)
	if err := os.WriteFile(filepath.Join(r.dir, blob.sum), blob.data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := r.fetcher()
	im := r.image("held")
	if err := f.Import(r.ctx, im.ID, blob.sum); err != nil {
		t.Fatal(err)
	}
	got, err := r.store.Image(r.ctx, im.ID)
	if err != nil || got.Status != compute.ImageActive || got.Size != int64(len(blob.data)) {
		t.Fatalf("after the import: %+v, %v; want active at once", got, err)
	}
	if blob.served.Load() != 0 {
		t.Errorf("moved %d bytes; want none", blob.served.Load())
	}
}

func TestParseURI(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	if got, err := imagesync.ParseURI("petrel-central:///sync/v1/blobs/" + sum); err != nil || got != sum {
		t.Errorf("ParseURI(good) = %q, %v", got, err)
	}
	for _, bad := range []string{
		"http://169.254.169.254/latest/meta-data", "https://example.com/sync/v1/blobs/" + sum,
		"petrel-central://evil/sync/v1/blobs/" + sum, "petrel-central:///sync/v1/blobs/" + sum + "/../x",
		"petrel-central:///sync/v1/blobs/" + strings.ToUpper(sum), "file:///etc/passwd", "",
	} {
		if _, err := imagesync.ParseURI(bad); !errors.Is(err, errs.Invalid) {
			t.Errorf("ParseURI(%q) err = %v; want invalid", bad, err)
		}
	}
}
