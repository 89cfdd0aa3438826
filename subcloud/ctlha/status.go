package ctlha

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/petrel-edge/petrel/servicemgr"
)

// StatusPort is where a paired controller answers its role (GET /), on
// its cluster address: what the lab's observer asks every round. The
// answer is public, like /healthz: the role and epoch, nothing else.
const StatusPort = 7301

// ServeStatus answers this controller's role at addr until ctx ends.
func (r *Runner) ServeStatus(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet || req.URL.Path != "/" {
			http.NotFound(w, req)
			return
		}
		role, epoch := r.Role()
		rf := servicemgr.RoleFile{Host: r.cfg.Self, Group: PairGroup, Role: servicemgr.RoleStandby, Epoch: epoch}
		if role == RoleActive {
			rf.Role = servicemgr.RoleActive
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rf)
	})}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
