package guestimage

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"syscall"
)

// cpio writes an initramfs in the "newc" format the kernel unpacks. Owners
// are root and times zero, so the same inputs give the same bytes.
type cpio struct {
	buf bytes.Buffer
	ino int
}

func newCPIO() *cpio { return &cpio{ino: 1} }

func (c *cpio) entry(name string, mode uint32, rmaj, rmin int, data []byte) {
	nlink := 1
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		nlink = 2
	}
	fmt.Fprintf(&c.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	c.ino++
	c.buf.WriteString(name)
	c.buf.WriteByte(0)
	c.pad()
	c.buf.Write(data)
	c.pad()
}

func (c *cpio) pad() {
	for c.buf.Len()%4 != 0 {
		c.buf.WriteByte(0)
	}
}

func (c *cpio) dir(name string) { c.entry(name, syscall.S_IFDIR|0o755, 0, 0, nil) }

func (c *cpio) file(name string, perm uint32, data []byte) {
	c.entry(name, syscall.S_IFREG|perm, 0, 0, data)
}

func (c *cpio) symlink(name, target string) {
	c.entry(name, syscall.S_IFLNK|0o777, 0, 0, []byte(target))
}

func (c *cpio) charDev(name string, perm uint32, major, minor int) {
	c.entry(name, syscall.S_IFCHR|perm, major, minor, nil)
}

// gzip ends the archive and returns it compressed.
func (c *cpio) gzip() ([]byte, error) {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(c.buf.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
