// Package page holds the paging and filter options of list calls, shared
// by the REST layer that parses them and the stores that apply them. It has
// no dependencies, so domain packages that host agents import stay light.
package page

// Options are the paging and filter parameters of a list call.
type Options struct {
	Limit   int               // 1..rest.MaxLimit
	After   string            // key of the last item of the previous page; "" for the first
	Filters map[string]string // field -> required value
}
