package server

import (
	_ "embed"
	"fmt"
	"sync"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/internal/version"
)

//go:embed openapi.yaml
var baseSpec []byte

// BaseOpenAPI returns the shared part of every daemon's OpenAPI document.
func BaseOpenAPI() []byte { return baseSpec }

// MergeOpenAPI returns the shared document with a daemon's fragment merged
// in: its paths and its components (schemas, parameters, responses) are
// added; a name defined twice is an error.
func MergeOpenAPI(fragment []byte) ([]byte, error) {
	// A process builds the same daemon again and again (a controller
	// pair's active one at every takeover): merge each fragment once.
	if b, ok := merged.Load(string(fragment)); ok {
		return b.([]byte), nil
	}
	b, err := mergeOpenAPI(fragment)
	if err == nil {
		merged.Store(string(fragment), b)
	}
	return b, err
}

// merged caches MergeOpenAPI's results by fragment.
var merged sync.Map

func mergeOpenAPI(fragment []byte) ([]byte, error) {
	var base, frag map[string]any
	if err := yaml.Unmarshal(baseSpec, &base); err != nil {
		return nil, fmt.Errorf("server: shared OpenAPI: %w", err)
	}
	if len(fragment) > 0 {
		if err := yaml.Unmarshal(fragment, &frag); err != nil {
			return nil, fmt.Errorf("server: daemon OpenAPI fragment: %w", err)
		}
	}
	if err := mergeInto(base, "paths", frag["paths"]); err != nil {
		return nil, err
	}
	if fc, ok := frag["components"].(map[string]any); ok {
		bc, _ := base["components"].(map[string]any)
		for section, v := range fc {
			if err := mergeInto(bc, section, v); err != nil {
				return nil, err
			}
		}
	}
	if info, ok := base["info"].(map[string]any); ok {
		info["version"] = version.Get().Version
		if t, ok := frag["info"].(map[string]any); ok && t["title"] != nil {
			info["title"] = t["title"]
		}
	}
	return yaml.Marshal(base)
}

func mergeInto(dst map[string]any, key string, src any) error {
	if src == nil {
		return nil
	}
	s, ok := src.(map[string]any)
	if !ok {
		return fmt.Errorf("server: OpenAPI fragment: %s is not a map", key)
	}
	d, _ := dst[key].(map[string]any)
	if d == nil {
		d = map[string]any{}
		dst[key] = d
	}
	for k, v := range s {
		if _, dup := d[k]; dup {
			return fmt.Errorf("server: OpenAPI fragment redefines %s %q", key, k)
		}
		d[k] = v
	}
	return nil
}
