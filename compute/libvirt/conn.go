package libvirt

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// dialerFor picks the dialer of uri's transport: a unix socket (the
// default, or ?socket=PATH) or plain TCP (qemu+tcp). Others are refused:
// every connection goes through streamConn.
func dialerFor(u *url.URL) (socket.Dialer, error) {
	transport := "unix"
	if _, t, ok := strings.Cut(u.Scheme, "+"); ok {
		transport = t
	} else if u.Host != "" {
		transport = "tls"
	}
	switch transport {
	case "unix":
		var opts []dialers.LocalOption
		if s := u.Query().Get("socket"); s != "" {
			opts = append(opts, dialers.WithSocket(s))
		}
		return dialers.NewLocal(opts...), nil
	case "tcp":
		var opts []dialers.RemoteOption
		if p := u.Port(); p != "" {
			opts = append(opts, dialers.UsePort(p))
		}
		return dialers.NewRemote(u.Hostname(), opts...), nil
	}
	return nil, fmt.Errorf("libvirt: transport %q not supported (unix or tcp)", transport)
}

// streamDialer wraps every connection d makes in a streamConn.
type streamDialer struct{ d socket.Dialer }

func (s streamDialer) Dial() (net.Conn, error) {
	c, err := s.d.Dial()
	if err != nil {
		return nil, err
	}
	return &streamConn{Conn: c}, nil
}

// connect opens a go-libvirt connection to the daemon d reaches, on the
// daemon's driver named by remote ("qemu:///system").
func connect(d socket.Dialer, remote golibvirt.ConnectURI) (*golibvirt.Libvirt, error) {
	l := golibvirt.NewWithDialer(streamDialer{d})
	if err := l.ConnectToURI(remote); err != nil {
		return nil, err
	}
	return l, nil
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
