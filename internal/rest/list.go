package rest

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
)

// List is the list envelope of the API contract.
type List[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token"`
}

// Paging limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// ListOptions are the paging and filter parameters of a list call.
type ListOptions = page.Options

// ParseList reads ?limit, ?page_token and ?field=value filters. Only the
// filters named in allowed are accepted; any other parameter is an error, so a
// misspelt filter never silently returns everything.
func ParseList(r *http.Request, allowed ...string) (ListOptions, error) {
	opts := ListOptions{Limit: DefaultLimit, Filters: map[string]string{}}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return opts, errs.Wrapf(errs.Invalid, "malformed query string: %v", err)
	}
	for key, vals := range query {
		if len(vals) != 1 {
			return opts, errs.Field(key, "given %d times; give it once", len(vals))
		}
		v := vals[0]
		switch {
		case key == "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxLimit {
				return opts, errs.Field("limit", "must be an integer from 1 to %d", MaxLimit)
			}
			opts.Limit = n
		case key == "page_token":
			after, err := DecodePageToken(v)
			if err != nil {
				return opts, err
			}
			opts.After = after
		case slices.Contains(allowed, key):
			opts.Filters[key] = v
		default:
			hint := "no filters"
			if len(allowed) > 0 {
				hint = "filters: " + strings.Join(allowed, ", ")
			}
			return opts, errs.Field(key, "unknown query parameter (limit, page_token; %s)", hint)
		}
	}
	return opts, nil
}

// EncodePageToken makes the opaque token for the page after key.
func EncodePageToken(key string) string {
	if key == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte("k:" + key))
}

// DecodePageToken reverses EncodePageToken.
func DecodePageToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(b), "k:") || !utf8.Valid(b) {
		return "", errs.Field("page_token", "is not a token this API issued")
	}
	return strings.TrimPrefix(string(b), "k:"), nil
}
