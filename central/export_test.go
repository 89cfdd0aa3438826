package central

// SetBlobWriteHook makes hook see every write of a blob to a site (tests
// cut links mid-transfer with it).
func SetBlobWriteHook(c *Central, hook func(site string, written int64)) { c.blobs.onWrite = hook }

// CutLink closes site's dial-home session, as a WAN cut does.
func CutLink(c *Central, site string) {
	if s := c.links.get(site); s != nil {
		s.Close()
	}
}

// BlobBytes is how many image bytes central served to site.
func BlobBytes(c *Central, site string) int64 {
	return c.blobs.sentTo(site)
}
