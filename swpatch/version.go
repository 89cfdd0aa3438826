package swpatch

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// Version is a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD].
// Patches stamp the version they bring as CURRENT+ID (build metadata), so
// a patch of a release has the release's precedence: versions are ordered
// as semver orders them, build metadata ignored.
type Version struct {
	Major, Minor, Patch int
	Pre                 []string
	Build               string
}

// ParseVersion parses s ("v" prefix allowed).
func ParseVersion(s string) (Version, error) {
	var v Version
	rest := strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		v.Build = rest[i+1:]
		rest = rest[:i]
		if v.Build == "" {
			return v, fmt.Errorf("%q: empty build metadata", s)
		}
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		v.Pre = strings.Split(rest[i+1:], ".")
		rest = rest[:i]
		for _, p := range v.Pre {
			if p == "" {
				return v, fmt.Errorf("%q: empty pre-release field", s)
			}
		}
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%q: want MAJOR.MINOR.PATCH[-PRE][+BUILD]", s)
	}
	nums := [3]*int{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || (len(p) > 1 && p[0] == '0') {
			return v, fmt.Errorf("%q: %q is not a version number", s, p)
		}
		*nums[i] = n
	}
	if len(s) > 128 {
		return v, fmt.Errorf("version longer than 128 characters")
	}
	return v, nil
}

// CompareVersions orders two version strings by semver precedence (-1, 0,
// +1); an unparsable one sorts first.
func CompareVersions(a, b string) int {
	va, errA := ParseVersion(a)
	vb, errB := ParseVersion(b)
	switch {
	case errA != nil && errB != nil:
		return strings.Compare(a, b)
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	}
	return va.Compare(vb)
}

// Compare orders v and w by semver precedence, ignoring build metadata.
func (v Version) Compare(w Version) int {
	if c := cmp.Compare(v.Major, w.Major); c != 0 {
		return c
	}
	if c := cmp.Compare(v.Minor, w.Minor); c != 0 {
		return c
	}
	if c := cmp.Compare(v.Patch, w.Patch); c != 0 {
		return c
	}
	switch {
	case len(v.Pre) == 0 && len(w.Pre) == 0:
		return 0
	case len(v.Pre) == 0:
		return 1 // a release follows its pre-releases
	case len(w.Pre) == 0:
		return -1
	}
	for i := 0; i < len(v.Pre) && i < len(w.Pre); i++ {
		a, b := v.Pre[i], w.Pre[i]
		na, errA := strconv.Atoi(a)
		nb, errB := strconv.Atoi(b)
		var c int
		switch {
		case errA == nil && errB == nil:
			c = cmp.Compare(na, nb)
		case errA == nil:
			c = -1
		case errB == nil:
			c = 1
		default:
			c = strings.Compare(a, b)
		}
		if c != 0 {
			return c
		}
	}
	return cmp.Compare(len(v.Pre), len(w.Pre))
}

// Stamp returns the version a patch with id brings to software at
// current: current+id (a '.'-joined extension of existing build metadata).
func Stamp(current, id string) string {
	if strings.Contains(current, "+") {
		return current + "." + id
	}
	return current + "+" + id
}
