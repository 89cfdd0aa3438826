package lab_test

import (
	"testing"

	"github.com/petrel-edge/petrel/lab"
)

func TestParseSites(t *testing.T) {
	got, err := lab.ParseSites("site-sx=simplex,site-std=multi-server:3,site-dx=duplex")
	if err != nil || len(got) != 3 || got[1].Workers != 3 || got[2].Shape != "duplex" {
		t.Fatalf("ParseSites = %+v, %v", got, err)
	}
	if got, _ := lab.ParseSites("s=multi-server"); got[0].Workers != 2 {
		t.Errorf("multi-server default workers = %d; want 2", got[0].Workers)
	}
	for _, bad := range []string{"", "site", "site=triplex", "Site=simplex", "a=simplex,a=duplex", "a=simplex:2", "a=multi-server:99"} {
		if _, err := lab.ParseSites(bad); err == nil {
			t.Errorf("ParseSites(%q) = nil error", bad)
		}
	}
}
