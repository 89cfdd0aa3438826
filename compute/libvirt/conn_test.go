package libvirt

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"reflect"
	"testing"

	"github.com/digitalocean/go-libvirt/socket"
)

// packet builds an RPC packet of the remote program.
func packet(proc, typ, serial, status uint32, payload string) []byte {
	b := make([]byte, pktHeaderLen, pktHeaderLen+len(payload))
	for i, v := range []uint32{uint32(pktHeaderLen + len(payload)), remoteProgram, 1, proc, typ, serial, status} {
		binary.BigEndian.PutUint32(b[4*i:], v)
	}
	return append(b, payload...)
}

// describe reads packets until EOF and describes each.
func describe(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	for {
		var hdr [pktHeaderLen]byte
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		field := func(off int) uint32 { return binary.BigEndian.Uint32(hdr[off:]) }
		payload := make([]byte, field(0)-pktHeaderLen)
		if _, err := io.ReadFull(r, payload); err != nil {
			t.Fatal(err)
		}
		kind := map[uint32]string{socket.Reply: "reply", socket.Stream: "stream"}[field(offType)]
		out = append(out, fmt.Sprintf("%d %s %d %d %q", field(offProc), kind, field(offSerial), field(offStatus), payload))
	}
}

// TestStreamConnOrdersStreams feeds streamConn what libvirtd 9.0 sends
// for a download whose reply comes last, a failed download, an upload and
// an unrelated call, and checks what go-libvirt gets to read.
func TestStreamConnOrdersStreams(t *testing.T) {
	const ok, fail, cont = socket.StatusOK, socket.StatusError, socket.StatusContinue
	in := [][]byte{
		packet(procVolDown, socket.Stream, 5, cont, "abc"), // data before the reply
		packet(procVolDown, socket.Stream, 5, cont, ""),    // end of file before the reply
		packet(1, socket.Reply, 6, ok, "x"),                // another call's reply passes
		packet(procVolDown, socket.Reply, 5, ok, ""),
		packet(procVolDown, socket.Stream, 5, ok, ""), // after end of file: dropped
		packet(procVolDown, socket.Stream, 7, cont, "zz"),
		packet(procVolDown, socket.Reply, 7, fail, "err"), // failed call: its stream is dropped
		packet(procVolUpload, socket.Reply, 8, ok, ""),
		packet(procVolUpload, socket.Stream, 8, ok, ""), // upload finished
		packet(procVolDown, socket.Reply, 9, ok, ""),    // the usual order
		packet(procVolDown, socket.Stream, 9, cont, "d"),
		packet(procVolDown, socket.Stream, 9, cont, ""),
	}
	want := []string{
		`1 reply 6 0 "x"`,
		`209 reply 5 0 ""`, `209 stream 5 2 "abc"`, `209 stream 5 2 ""`,
		`209 reply 7 1 "err"`,
		`208 reply 8 0 ""`, `208 stream 8 0 ""`,
		`209 reply 9 0 ""`, `209 stream 9 2 "d"`, `209 stream 9 2 ""`,
	}
	server, client := net.Pipe()
	go func() {
		for _, p := range in {
			// Odd write sizes: streamConn must frame packets itself.
			for len(p) > 0 {
				n := min(len(p), 5)
				if _, err := server.Write(p[:n]); err != nil {
					return
				}
				p = p[n:]
			}
		}
		server.Close()
	}()
	if got := describe(t, &streamConn{Conn: client}); !reflect.DeepEqual(got, want) {
		t.Errorf("streamConn passed on\n%q\nwant\n%q", got, want)
	}
}
