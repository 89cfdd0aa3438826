package subcloud

import (
	"github.com/petrel-edge/petrel/subcloud/osapi"
)

// openstackDeps are the services the OpenStack-compatible API
// (docs/openstack.md) fronts. Its Keystone region is the site's name, as
// StarlingX names a subcloud's region.
//
// Servers stays nil (server and hypervisor calls answer 503) until the
// site's compute service exists: it is to be set here from the
// Subcloud's compute service, which must be built before register runs.
func (s *Subcloud) openstackDeps() osapi.Deps {
	return osapi.Deps{Images: s.Images, Flavors: s.Flavors, Servers: s.Servers, Region: s.cfg.Site,
		ImageWrites: imageWrites{s}}
}
