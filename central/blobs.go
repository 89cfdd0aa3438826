package central

import (
	"context"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

// Sites fetch synced images' bytes from central over their own dial-home
// link: a site opens a stream on its session and speaks HTTP/1.1 on it.
// Central serves one route there, GET /sync/v1/blobs/{sha256} (with
// Range: bytes=N- for resuming), only for the checksum of a live synced
// image, from central's image files. Streams are limited fleet-wide and
// to one per site; beyond that the answer is 503 with Retry-After.

// DefaultBlobStreams bounds the blob streams served at once, fleet-wide.
const DefaultBlobStreams = 16

// blobServer serves the sites' blob streams.
type blobServer struct {
	c     *Central
	max   int // fleet-wide
	bytes *prometheus.CounterVec

	mu     sync.Mutex
	total  int
	bySite map[string]int
	sent   map[string]int64 // bytes served, per site
	// onWrite, when set (tests), sees every write of a blob to site,
	// with the bytes written so far in that response.
	onWrite func(site string, written int64)
}

func newBlobServer(c *Central, max int, reg prometheus.Registerer) *blobServer {
	if max <= 0 {
		max = DefaultBlobStreams
	}
	b := &blobServer{c: c, max: max, bySite: map[string]int{}, sent: map[string]int64{},
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_central_blob_bytes_total",
			Help: "Image bytes served to sites over their links."}, []string{"site"})}
	reg.MustRegister(b.bytes)
	return b
}

// acquire takes a stream slot for site; false when none is free.
func (b *blobServer) acquire(site string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total >= b.max || b.bySite[site] >= 1 {
		return false
	}
	b.total++
	b.bySite[site]++
	return true
}

func (b *blobServer) release(site string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total--
	if b.bySite[site]--; b.bySite[site] <= 0 {
		delete(b.bySite, site)
	}
}

// handler serves one site's link streams.
func (b *blobServer) handler(site string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sync/v1/blobs/{sum}", func(w http.ResponseWriter, r *http.Request) { b.serve(w, r, site) })
	return mux
}

func (b *blobServer) serve(w http.ResponseWriter, r *http.Request, site string) {
	sum := r.PathValue("sum")
	if compute.ValidateChecksum("sum", sum) != nil {
		http.NotFound(w, r)
		return
	}
	live, err := b.c.syncedChecksum(r.Context(), sum)
	if err != nil {
		b.c.log.Warn("blob request: reading the sync store failed", "site", site, "err", err)
		http.Error(w, "central cannot serve blobs now", http.StatusServiceUnavailable)
		return
	}
	if !live {
		http.NotFound(w, r)
		return
	}
	if !b.acquire(site) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many blob streams; retry later", http.StatusServiceUnavailable)
		return
	}
	defer b.release(site)
	f, err := os.Open(b.c.images.files.Path(sum))
	if err != nil {
		http.NotFound(w, r) // deleted meanwhile
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countingWriter{ResponseWriter: w, b: b, site: site}
	http.ServeContent(cw, r, "", time.Time{}, f)
	b.bytes.WithLabelValues(site).Add(float64(cw.n))
	b.mu.Lock()
	b.sent[site] += cw.n
	b.mu.Unlock()
}

// sentTo is how many bytes were served to site.
func (b *blobServer) sentTo(site string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent[site]
}

// countingWriter counts a blob response's body bytes.
type countingWriter struct {
	http.ResponseWriter
	b    *blobServer
	site string
	n    int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	if hook := w.b.onWrite; hook != nil {
		hook(w.site, w.n)
	}
	return n, err
}

// syncedChecksum reports whether sum is the checksum of a live synced
// image: only those bytes are served.
func (c *Central) syncedChecksum(ctx context.Context, sum string) (bool, error) {
	recs, _, err := c.sync.store.Since(ctx, syncproto.Images, 0, 0)
	if err != nil {
		return false, err
	}
	for _, rec := range recs {
		if rec.Deleted {
			continue
		}
		d, err := decodeImageDoc(rec)
		if err != nil {
			return false, err
		}
		if d.Checksum == sum {
			return true, nil
		}
	}
	return false, nil
}
