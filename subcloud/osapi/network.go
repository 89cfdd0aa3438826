package osapi

import (
	"net/http"
	"strings"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
)

// Neutron v2.0 at /network, empty: Petrel sites have no tenant networks.
// It exists because clients expect a network service in every cloud (the
// `openstack availability zone list` of python-openstackclient 6.0 fails
// without one); it lists no networks and no extensions.

// neutronDialect writes Neutron's error body:
// {"NeutronError": {"type": "HTTPNotFound", "message": "…", "detail": ""}}.
var neutronDialect = &rest.Dialect{
	Name:   "openstack-network",
	Status: errorStatus,
	WriteError: func(w http.ResponseWriter, r *http.Request, status int, msg string, _ error) {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Keystone uri="`+baseURL(r)+`/identity/v3"`)
		}
		typ := "HTTP" + strings.ReplaceAll(http.StatusText(status), " ", "")
		rest.WriteJSON(w, status, map[string]map[string]string{"NeutronError": {"type": typ, "message": msg, "detail": ""}})
	},
}

func (o *api) registerNetwork(srv *rest.Server) {
	d, reader := neutronDialect, o.auth.Require(auth.Reader)
	srv.HandleDialect(d, "osNetworkVersions", http.MethodGet, "/network", nil, o.networkVersions)
	srv.HandleDialect(d, "osNetworkVersionsSlash", http.MethodGet, "/network/", nil, o.networkVersions)
	srv.HandleDialect(d, "osListExtensions", http.MethodGet, "/network/v2.0/extensions", reader, empty("extensions"))
	srv.HandleDialect(d, "osGetExtension", http.MethodGet, "/network/v2.0/extensions/{alias}", reader, func(r *http.Request) (int, any, error) {
		return 0, nil, errs.Wrapf(errs.NotFound, "extension with alias %s does not exist", rest.Var(r, "alias"))
	})
	srv.HandleDialect(d, "osListNetworks", http.MethodGet, "/network/v2.0/networks", reader, empty("networks"))
}

// NetworkVersion is an entry of Neutron's versions document.
type NetworkVersion struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Links  []Link `json:"links"`
}

func (o *api) networkVersions(r *http.Request) (int, any, error) {
	return http.StatusOK, map[string][]NetworkVersion{"versions": {{ID: "v2.0", Status: "CURRENT",
		Links: []Link{{Rel: "self", Href: baseURL(r) + "/network/v2.0/"}}}}}, nil
}

// empty answers an empty Neutron list named key.
func empty(key string) rest.Handler {
	return func(*http.Request) (int, any, error) {
		return http.StatusOK, map[string][]any{key: {}}, nil
	}
}
