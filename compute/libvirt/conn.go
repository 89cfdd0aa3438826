package libvirt

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// dialerFor picks the dialer of uri's transport: a unix socket (the
// default, or ?socket=PATH), plain TCP (qemu+tcp) or TLS (qemu+tls, and
// qemu://HOST/, libvirt's default for a remote host). Others are
// refused: every connection goes through streamConn.
func dialerFor(ctx context.Context, u *url.URL, opts Options) (socket.Dialer, error) {
	transport := "unix"
	if _, t, ok := strings.Cut(u.Scheme, "+"); ok {
		transport = t
	} else if u.Host != "" {
		transport = "tls"
	}
	switch transport {
	case "unix":
		var lopts []dialers.LocalOption
		if s := u.Query().Get("socket"); s != "" {
			lopts = append(lopts, dialers.WithSocket(s))
		}
		return dialers.NewLocal(lopts...), nil
	case "tcp":
		addr := net.JoinHostPort(u.Hostname(), portOr(u, defaultTCPPort))
		return dialerFunc(func() (net.Conn, error) { return opts.dial(ctx, addr) }), nil
	case "tls":
		if opts.TLS == nil {
			return nil, fmt.Errorf("%w: %s", ErrNoTLSConfig, u.Redacted())
		}
		conf := opts.TLS.Clone()
		if conf.MinVersion < tls.VersionTLS12 {
			conf.MinVersion = tls.VersionTLS12
		}
		if conf.ServerName == "" {
			// The daemon's certificate must name the address dialled.
			conf.ServerName = u.Hostname()
		}
		addr := net.JoinHostPort(u.Hostname(), portOr(u, defaultTLSPort))
		return dialerFunc(func() (net.Conn, error) { return dialTLS(ctx, addr, conf, opts.dial) }), nil
	}
	return nil, fmt.Errorf("libvirt: transport %q not supported (unix, tcp or tls)", transport)
}

// libvirtd's default ports.
const (
	defaultTCPPort = "16509"
	defaultTLSPort = "16514"
	dialTimeout    = 20 * time.Second // when ctx has no deadline
)

func portOr(u *url.URL, def string) string {
	if p := u.Port(); p != "" {
		return p
	}
	return def
}

// dial opens a TCP connection to addr, through o.DialContext if set.
func (o Options) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if o.DialContext != nil {
		return o.DialContext(ctx, "tcp", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// ErrNoTLSConfig: a qemu+tls URI was given without Options.TLS.
var ErrNoTLSConfig = errors.New("libvirt: qemu+tls needs a TLS client configuration (certificate, key and CA)")

// ErrCertRefused: the daemon completed the TLS handshake but refused the
// client: its certificate is not signed by the daemon's CA, or its
// distinguished name is not on the daemon's tls_allowed_dn_list.
var ErrCertRefused = errors.New("libvirt: the daemon refused this client's certificate")

// dialTLS opens a TLS connection to the daemon at addr and waits for
// libvirtd's verdict on the client: after the handshake the daemon checks
// the client's certificate (CA, validity, allowed DN) and sends one byte,
// 1, if it is accepted; otherwise it closes the connection (under TLS 1.3
// the client's handshake has already succeeded by then, so only this
// byte tells).
func dialTLS(ctx context.Context, addr string, conf *tls.Config, dial func(context.Context, string) (net.Conn, error)) (net.Conn, error) {
	raw, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > dialTimeout {
		deadline = time.Now().Add(dialTimeout)
	}
	_ = raw.SetDeadline(deadline)
	c := tls.Client(raw, conf)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 1 {
		c.Close()
		if err == nil {
			err = fmt.Errorf("verdict byte %d", b[0])
		}
		return nil, fmt.Errorf("%w: %w", ErrCertRefused, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// streamDialer wraps every connection d makes in a streamConn, and
// keeps the last one (the driver closes it when a daemon is gone).
type streamDialer struct {
	d    socket.Dialer
	last *atomic.Pointer[streamConn]
}

func (s streamDialer) Dial() (net.Conn, error) {
	c, err := s.d.Dial()
	if err != nil {
		return nil, err
	}
	sc := &streamConn{Conn: c}
	s.last.Store(sc)
	return sc, nil
}

// connect opens a go-libvirt connection to the daemon d reaches, on the
// daemon's driver named by remote ("qemu:///system"), and gives the
// connection under it.
func connect(d socket.Dialer, remote golibvirt.ConnectURI) (*golibvirt.Libvirt, *atomic.Pointer[streamConn], error) {
	last := &atomic.Pointer[streamConn]{}
	l := golibvirt.NewWithDialer(streamDialer{d: d, last: last})
	if err := l.ConnectToURI(remote); err != nil {
		return nil, nil, err
	}
	return l, last, nil
}

// RPC packet layout (libvirt's virnetprotocol.x): a 4-byte big-endian
// length that counts itself, then program, version, procedure, type,
// serial and status, 4 bytes each, then the payload.
const (
	pktHeaderLen = 28
	pktMaxLen    = 64 << 20 // well above libvirt's 32 MiB message limit
	offProgram   = 4
	offProc      = 12
	offType      = 16
	offSerial    = 20
	offStatus    = 24

	remoteProgram = 0x20008086 // REMOTE_PROGRAM
	procVolUpload = 208        // REMOTE_PROC_STORAGE_VOL_UPLOAD
	procVolDown   = 209        // REMOTE_PROC_STORAGE_VOL_DOWNLOAD
)

// streamConn puts the packets of volume upload and download streams in the
// order go-libvirt needs, which libvirtd does not guarantee.
//
// go-libvirt reads a stream call's reply, then its stream packets, up to
// the end-of-file packet (an empty "continue"). But libvirtd 9.0 may send
// a download's data and end-of-file before the call's reply (seen a few
// times per hundred console-log downloads under load). go-libvirt then
// takes the first data packet for the reply (its bytes are lost) and
// returns at end-of-file, and the reply arrives for a call no longer
// reading. Its reader goroutine delivers on the call's unbuffered channel
// while holding the lock the call needs to deregister (upstream issue
// #241), so the whole connection deadlocks.
//
// streamConn reads whole packets. It holds a stream's packets back until
// its reply has passed, drops them if the reply is an error, and drops any
// stream packet of a serial after that stream's end-of-file or error
// packet, which go-libvirt would never read. Reads come from go-libvirt's
// one reader goroutine; writes pass through.
type streamConn struct {
	net.Conn
	pending []byte              // read and passed on, not yet returned by Read
	held    map[uint32][][]byte // stream packets that came before their call's reply
	open    map[uint32]bool     // streams whose reply has passed
	ended   map[uint32]bool     // streams go-libvirt has stopped reading
}

func (c *streamConn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// next reads one packet and passes on what may go on now.
func (c *streamConn) next() error {
	var lenb [4]byte
	if _, err := io.ReadFull(c.Conn, lenb[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(lenb[:])
	if n < pktHeaderLen || n > pktMaxLen {
		return fmt.Errorf("libvirt: RPC packet of %d bytes", n)
	}
	pkt := make([]byte, n)
	copy(pkt, lenb[:])
	if _, err := io.ReadFull(c.Conn, pkt[4:]); err != nil {
		return err
	}
	field := func(off int) uint32 { return binary.BigEndian.Uint32(pkt[off:]) }
	proc := field(offProc)
	if field(offProgram) != remoteProgram || (proc != procVolUpload && proc != procVolDown) {
		c.pending = pkt
		return nil
	}
	if c.held == nil {
		c.held, c.open, c.ended = map[uint32][][]byte{}, map[uint32]bool{}, map[uint32]bool{}
	}
	serial, status := field(offSerial), field(offStatus)
	switch field(offType) {
	case socket.Reply:
		held := c.held[serial]
		delete(c.held, serial)
		c.pending = pkt
		if status != socket.StatusOK {
			return nil // the call failed: no stream
		}
		c.open[serial] = true
		for _, h := range held {
			c.pass(h)
		}
	case socket.Stream:
		switch {
		case c.ended[serial]:
			if status != socket.StatusContinue {
				delete(c.ended, serial) // its last packet
			}
		case c.open[serial]:
			c.pass(pkt)
		default:
			c.held[serial] = append(c.held[serial], pkt)
		}
	default:
		c.pending = pkt
	}
	return nil
}

// pass passes on a stream packet of an open stream, and closes the stream
// at its end-of-file, error or finish.
func (c *streamConn) pass(pkt []byte) {
	serial := binary.BigEndian.Uint32(pkt[offSerial:])
	if c.ended[serial] {
		return
	}
	c.pending = append(c.pending, pkt...)
	status := binary.BigEndian.Uint32(pkt[offStatus:])
	eof := status == socket.StatusContinue && len(pkt) == pktHeaderLen
	if eof || status != socket.StatusContinue {
		delete(c.open, serial)
	}
	if eof || status == socket.StatusError {
		if len(c.ended) > 1024 { // bound what streams that never finish leave
			clear(c.ended)
		}
		c.ended[serial] = true
	}
}
