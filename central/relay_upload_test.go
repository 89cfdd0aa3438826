package central_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/subcloud"
)

// An image upload larger than the API's usual 1 MiB body cap streams
// through central's relay to the site (petrel --site X image create).
func TestRelayStreamsAnImageUpload(t *testing.T) {
	f := startCentral(t)
	ctx := context.Background()
	cert, key := f.siteFiles(t, "site-a")
	f.startSite(t, "site-a", cert, key)
	f.waitAvailability(t, "site-a", central.Online)
	data := bytes.Repeat([]byte("relayed image bytes "), 150000) // 3 MB
	sum := sha256.Sum256(data)
	var im compute.Image
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/subclouds/site-a/api/v1/images", nil, subcloud.CreateImageRequest{Name: "edge-app",
		DiskFormat: compute.FormatRaw, Checksum: hex.EncodeToString(sum[:]), Size: int64(len(data))}, &im); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.Upload(ctx, http.MethodPut, "/v1/subclouds/site-a/api/v1/images/"+im.ID+"/file", bytes.NewReader(data), int64(len(data)), &im); err != nil {
		t.Fatalf("relayed upload: %v", err)
	}
	if im.Status != compute.ImageActive || im.Size != int64(len(data)) {
		t.Errorf("relayed upload = %+v", im)
	}
}
