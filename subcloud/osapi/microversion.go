package osapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/petrel-edge/petrel/internal/rest"
)

// Nova microversions: a request names one in OpenStack-API-Version
// ("compute 2.37") or the older X-OpenStack-Nova-API-Version ("2.37");
// none means the minimum, "latest" the maximum. Answers echo the version
// served in both headers.

// microversion is a Nova API version 2.N.
type microversion struct{ major, minor int }

// The versions served.
var (
	minVersion = microversion{2, 1}
	maxVersion = microversion{2, 60}
)

func (v microversion) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

// atLeast reports whether v is minor 2.minor or later.
func (v microversion) atLeast(minor int) bool {
	return v.major > 2 || (v.major == 2 && v.minor >= minor)
}

func (v microversion) less(w microversion) bool {
	return v.major < w.major || (v.major == w.major && v.minor < w.minor)
}

// statusError is an error with a status Petrel's error kinds do not
// name: a microversion out of range (406), a call not implemented (501).
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

// requestedVersion reads the microversion a request asks for.
func requestedVersion(r *http.Request) (microversion, error) {
	raw := ""
	for _, h := range r.Header.Values("OpenStack-API-Version") {
		for _, part := range strings.Split(h, ",") {
			if svc, ver, ok := strings.Cut(strings.TrimSpace(part), " "); ok && strings.EqualFold(svc, "compute") {
				raw = strings.TrimSpace(ver)
			}
		}
	}
	if raw == "" {
		raw = strings.TrimSpace(r.Header.Get("X-OpenStack-Nova-API-Version"))
	}
	switch {
	case raw == "":
		return minVersion, nil
	case strings.EqualFold(raw, "latest"):
		return maxVersion, nil
	}
	majS, minS, ok := strings.Cut(raw, ".")
	maj, err1 := strconv.Atoi(majS)
	minor, err2 := strconv.Atoi(minS)
	if !ok || err1 != nil || err2 != nil || maj < 0 || minor < 0 {
		return microversion{}, &statusError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("API version string %s format is not valid; use major.minor, e.g. 2.37", raw)}
	}
	v := microversion{maj, minor}
	if v.less(minVersion) || maxVersion.less(v) {
		return microversion{}, &statusError{status: http.StatusNotAcceptable,
			msg: fmt.Sprintf("Version %s is not supported by the API. Minimum is %s and maximum is %s.", v, minVersion, maxVersion)}
	}
	return v, nil
}

// novaHandler serves one Nova call at a microversion.
type novaHandler func(r *http.Request, v microversion) (int, any, error)

// versioned resolves the request's microversion for h and echoes it.
func versioned(h novaHandler) rest.Handler {
	return func(r *http.Request) (int, any, error) {
		v, err := requestedVersion(r)
		if err != nil {
			return 0, nil, err
		}
		ctx := r.Context()
		rest.SetHeader(ctx, "OpenStack-API-Version", "compute "+v.String())
		rest.SetHeader(ctx, "X-OpenStack-Nova-API-Version", v.String())
		rest.SetHeader(ctx, "Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
		return h(r, v)
	}
}
