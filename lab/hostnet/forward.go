package hostnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// MaxForwardedConns bounds the live connections of one Forwarder;
	// connections beyond it are closed at once.
	MaxForwardedConns = 128
	// forwardDialTimeout bounds each dial into the namespace.
	forwardDialTimeout = 5 * time.Second
)

// Forwarder relays TCP connections from a loopback address in the
// caller's (root) namespace to a fixed address inside a lab namespace:
// the way to reach a lab endpoint from the root namespace, which has no
// route to lab addresses.
//
// Its connections into the namespace keep that namespace alive (even after
// `ip netns del`); Close them before removing the namespace.
type Forwarder struct {
	ns, target string
	ln         net.Listener
	cancel     context.CancelFunc // cancels dials in progress
	slots      chan struct{}      // one token per live connection
	wg         sync.WaitGroup     // the accept loop and every relay

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // both ends of every live relay
}

// Forward starts a Forwarder listening on listen, a literal IPv4 loopback
// "ip:port" (port 0 picks one; see Addr), that relays every connection to
// target ("ip:port") dialed inside namespace ns. ctx bounds only the
// start; the Forwarder runs until Close.
func Forward(ctx context.Context, listen, ns, target string) (*Forwarder, error) {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil || !ap.Addr().Is4() || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("%w: forwarder address %q: want 127.x.y.z:port", ErrInvalidAddr, listen)
	}
	if err := checkAddrPort(target); err != nil {
		return nil, err
	}
	if _, err := netnsPath(ns); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("forwarder to %s in %s: %w", target, ns, err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &Forwarder{
		ns: ns, target: target, ln: ln, cancel: cancel,
		slots: make(chan struct{}, MaxForwardedConns),
		conns: make(map[net.Conn]struct{}),
	}
	f.wg.Add(1)
	go f.serve(runCtx)
	return f, nil
}

// Addr is the address the Forwarder listens on.
func (f *Forwarder) Addr() net.Addr { return f.ln.Addr() }

// Close stops accepting, closes every live connection (both ends) and
// waits until every goroutine of the Forwarder has returned. Idempotent.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()

	f.cancel()
	err := f.ln.Close()
	for c := range conns {
		c.Close()
	}
	f.wg.Wait()
	return err
}

// track records c as live; false if the Forwarder is closed, and then the
// caller must close c itself.
func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

// release closes c and forgets it.
func (f *Forwarder) release(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Forwarder) serve(ctx context.Context) {
	defer f.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := f.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// For example EMFILE: wait a little instead of spinning.
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case f.slots <- struct{}{}:
		default:
			c.Close() // over the limit
			continue
		}
		if !f.track(c) {
			c.Close()
			<-f.slots
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.slots }()
			f.relay(ctx, c)
		}()
	}
}

// relay dials the target for the accepted connection c and copies both
// ways until both directions are done or either fails.
func (f *Forwarder) relay(ctx context.Context, c net.Conn) {
	defer f.release(c)
	dctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
	u, err := DialIn(dctx, f.ns, f.target)
	cancel()
	if err != nil {
		return
	}
	if !f.track(u) {
		u.Close()
		return
	}
	defer f.release(u)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(u, c)
	}()
	pipe(c, u)
	<-done
}

// pipe copies src to dst. At EOF it half-closes dst, so the other side sees
// the end while the opposite direction goes on; on an error it closes
// both, which ends the opposite direction too.
func pipe(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
}
