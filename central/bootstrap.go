package central

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/inventory"
)

// Bootstrap values are the YAML document an operator gives with a new
// subcloud; the deploy writes them to the Ansible playbook's vars file
// (never to extra-vars). They reach execution, so they are allow-listed
// (ENGINEERING.md): every key must be in bootstrapSchema, no key may start
// with "ansible_" (those steer Ansible itself), required keys must be
// present, and each value must have its key's type. Key names follow
// StarlingX's bootstrap values (localhost.yml), with Petrel's shape names
// as system_mode values. Secrets (passwords, keys) are not bootstrap values.

// valueKind is the type a bootstrap value must have.
type valueKind int

const (
	kindString     valueKind = iota // free text, one line
	kindEnum                        // one of valueSpec.enum
	kindIP                          // an IPv4 or IPv6 address
	kindPrefix                      // a subnet in CIDR notation
	kindIPList                      // a list of addresses
	kindStringList                  // a list of one-line strings
)

// valueSpec describes one allowed key.
type valueSpec struct {
	kind     valueKind
	required bool
	enum     []string
}

// bootstrapSchema is the allow-list of bootstrap value keys.
var bootstrapSchema = map[string]valueSpec{
	"name":                             {kind: kindString}, // if given, the subcloud's name
	"description":                      {kind: kindString},
	"location":                         {kind: kindString},
	"system_mode":                      {kind: kindEnum, enum: []string{string(inventory.Simplex), string(inventory.Duplex), string(inventory.MultiServer)}},
	"timezone":                         {kind: kindString},
	"management_subnet":                {kind: kindPrefix, required: true},
	"management_start_address":         {kind: kindIP},
	"management_end_address":           {kind: kindIP},
	"management_gateway_address":       {kind: kindIP, required: true},
	"cluster_subnet":                   {kind: kindPrefix},
	"external_oam_subnet":              {kind: kindPrefix, required: true},
	"external_oam_gateway_address":     {kind: kindIP, required: true},
	"external_oam_floating_address":    {kind: kindIP, required: true},
	"external_oam_node_0_address":      {kind: kindIP},
	"external_oam_node_1_address":      {kind: kindIP},
	"systemcontroller_gateway_address": {kind: kindIP},
	"dns_servers":                      {kind: kindIPList},
	"ntp_servers":                      {kind: kindStringList},
}

// inSubnet pairs address keys with the subnet key they must fall in.
var inSubnet = map[string]string{
	"management_start_address":      "management_subnet",
	"management_end_address":        "management_subnet",
	"management_gateway_address":    "management_subnet",
	"external_oam_gateway_address":  "external_oam_subnet",
	"external_oam_floating_address": "external_oam_subnet",
	"external_oam_node_0_address":   "external_oam_subnet",
	"external_oam_node_1_address":   "external_oam_subnet",
}

// MaxBootstrapValues bounds the bootstrap values document.
const MaxBootstrapValues = 64 << 10

// BootstrapKeys lists the allowed bootstrap value keys, required ones
// first, for documentation and error messages.
func BootstrapKeys() (required, optional []string) {
	for k, v := range bootstrapSchema {
		if v.required {
			required = append(required, k)
		} else {
			optional = append(optional, k)
		}
	}
	sort.Strings(required)
	sort.Strings(optional)
	return required, optional
}

// ParseBootstrapValues parses and validates a bootstrap values document.
// Errors are invalid-argument errors naming the key, as
// bootstrap_values.KEY; the values come back normalised (addresses in
// canonical form).
func ParseBootstrapValues(doc string) (map[string]any, error) {
	const field = "bootstrap_values"
	if len(doc) > MaxBootstrapValues {
		return nil, errs.Field(field, "larger than %d bytes", MaxBootstrapValues)
	}
	// Strict: a key given twice is an error, not the last one winning.
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return nil, errs.Field(field, "not valid YAML: %v", err)
	}
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, errs.Field(field, "must be a YAML mapping of keys to values")
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad key reported is the same every time
	out := make(map[string]any, len(raw))
	for _, k := range keys {
		if strings.HasPrefix(strings.ToLower(k), "ansible_") {
			return nil, errs.Field(field+"."+k, "ansible_* keys are not allowed: bootstrap values never steer Ansible itself")
		}
		spec, ok := bootstrapSchema[k]
		if !ok {
			return nil, errs.Field(field+"."+k, "unknown key")
		}
		v, err := spec.check(raw[k])
		if err != nil {
			return nil, errs.Field(field+"."+k, "%v", err)
		}
		out[k] = v
	}
	required, _ := BootstrapKeys()
	for _, k := range required {
		if _, ok := out[k]; !ok {
			return nil, errs.Field(field+"."+k, "required key missing")
		}
	}
	for _, k := range keys {
		subnetKey, ok := inSubnet[k]
		if !ok {
			continue
		}
		subnet, ok := out[subnetKey].(string)
		if !ok {
			continue
		}
		p := netip.MustParsePrefix(subnet)
		if !p.Contains(netip.MustParseAddr(out[k].(string))) {
			return nil, errs.Field(field+"."+k, "%s is not in %s %s", out[k], subnetKey, subnet)
		}
	}
	if s, ok := out["management_start_address"].(string); ok {
		if e, ok := out["management_end_address"].(string); ok && netip.MustParseAddr(e).Less(netip.MustParseAddr(s)) {
			return nil, errs.Field(field+".management_end_address", "%s is before management_start_address %s", e, s)
		}
	}
	return out, nil
}

func (v valueSpec) check(x any) (any, error) {
	switch v.kind {
	case kindString:
		return oneLine(x)
	case kindEnum:
		s, ok := x.(string)
		if !ok || !slices.Contains(v.enum, s) {
			return nil, fmt.Errorf("must be one of %s", strings.Join(v.enum, ", "))
		}
		return s, nil
	case kindIP:
		return address(x)
	case kindPrefix:
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("must be a subnet in CIDR notation (a string)")
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Masked() != p {
			return nil, fmt.Errorf("%q is not a subnet in CIDR notation, such as 192.168.204.0/24", s)
		}
		return p.String(), nil
	case kindIPList, kindStringList:
		list, ok := x.([]any)
		if !ok {
			return nil, fmt.Errorf("must be a list")
		}
		out := make([]any, len(list))
		for i, e := range list {
			var err error
			if v.kind == kindIPList {
				out[i], err = address(e)
			} else {
				out[i], err = oneLine(e)
			}
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
		}
		return out, nil
	}
	panic(fmt.Sprintf("central: bootstrap value kind %d has no check", v.kind))
}

func oneLine(x any) (string, error) {
	s, ok := x.(string)
	if !ok {
		return "", fmt.Errorf("must be a string")
	}
	if len(s) > maxText || strings.ContainsAny(s, "\r\n\x00") {
		return "", fmt.Errorf("must be one line of at most %d bytes", maxText)
	}
	return s, nil
}

func address(x any) (string, error) {
	s, ok := x.(string)
	if !ok {
		return "", fmt.Errorf("must be an IP address (a string)")
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("%q is not an IP address", s)
	}
	return a.String(), nil
}

// ParseBootstrapAddress checks the address Ansible reaches a subcloud's
// controller-0 at and returns it in canonical form.
func ParseBootstrapAddress(field, s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
		return "", errs.Field(field, "%q is not a unicast IP address", s)
	}
	return a.Unmap().String(), nil
}
