package osapi

import (
	"errors"
	"net/http"

	"github.com/petrel-edge/petrel/internal/rest"
)

// Errors reach clients as each OpenStack service shapes them; the status
// comes from Petrel's one table (rest.Classify over internal/errs kinds),
// except where a dialect says otherwise (an unsupported microversion).

// novaFaults names Nova's error bodies by status, as Nova's own fault
// wrapper does: {"itemNotFound": {"code": 404, "message": "…"}}.
var novaFaults = map[int]string{
	http.StatusBadRequest:            "badRequest",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "itemNotFound",
	http.StatusMethodNotAllowed:      "badMethod",
	http.StatusConflict:              "conflictingRequest",
	http.StatusRequestEntityTooLarge: "overLimit",
	http.StatusUnsupportedMediaType:  "badMediaType",
	http.StatusTooManyRequests:       "overLimit",
	http.StatusNotImplemented:        "notImplemented",
	http.StatusServiceUnavailable:    "serviceUnavailable",
}

// NovaFault is the name of Nova's error body for status; every other
// status is a computeFault.
func NovaFault(status int) string {
	if n, ok := novaFaults[status]; ok {
		return n
	}
	return "computeFault"
}

// NovaError is Nova's error body.
type NovaError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// errorStatus picks the statuses Petrel's table has no kind for.
func errorStatus(err error) int {
	var ve *statusError
	if errors.As(err, &ve) {
		return ve.status
	}
	return 0
}

var novaDialect = &rest.Dialect{
	Name:   "openstack-compute",
	Status: errorStatus,
	WriteError: func(w http.ResponseWriter, r *http.Request, status int, msg string, _ error) {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Keystone uri="`+baseURL(r)+`/identity/v3"`)
		}
		rest.WriteJSON(w, status, map[string]NovaError{NovaFault(status): {Code: status, Message: msg}})
	},
}

// KeystoneError is the error body of Keystone (and, here, Glance):
// {"error": {"code": 401, "title": "Unauthorized", "message": "…"}}.
type KeystoneError struct {
	Error struct {
		Code    int    `json:"code"`
		Title   string `json:"title"`
		Message string `json:"message"`
	} `json:"error"`
}

func keystoneStyle(name string) *rest.Dialect {
	return &rest.Dialect{
		Name:   name,
		Status: errorStatus,
		WriteError: func(w http.ResponseWriter, r *http.Request, status int, msg string, _ error) {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Keystone uri="`+baseURL(r)+`/identity/v3"`)
			}
			var e KeystoneError
			e.Error.Code, e.Error.Title, e.Error.Message = status, http.StatusText(status), msg
			rest.WriteJSON(w, status, e)
		},
	}
}

var (
	identityDialect = keystoneStyle("openstack-identity")
	imageDialect    = keystoneStyle("openstack-image")
)
