package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/client"
)

// printRaw prints one REST resource: exactly the API's JSON for -o json, the
// same as YAML for -o yaml, and FIELD/VALUE rows for the table format.
func (a *app) printRaw(raw []byte) error {
	switch a.output {
	case "json":
		return printJSON(a.stdout, raw)
	case "yaml":
		return printYAML(a.stdout, raw)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return printJSON(a.stdout, raw)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIELD\tVALUE")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\n", k, scalar(m[k]))
	}
	return tw.Flush()
}

// printList prints a list: the list envelope for json/yaml, else a table of
// the named columns (JSON keys; dotted for nested ones).
func (a *app) printList(p client.Page, columns ...string) error {
	if a.output != "table" {
		raw, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if a.output == "json" {
			return printJSON(a.stdout, raw)
		}
		return printYAML(a.stdout, raw)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.ReplaceAll(strings.Join(columns, "\t"), ".", "_")))
	for _, item := range p.Items {
		var m map[string]any
		if err := json.Unmarshal(item, &m); err != nil {
			return err
		}
		vals := make([]string, len(columns))
		for i, c := range columns {
			vals[i] = lookup(m, c)
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p.NextPageToken != "" {
		fmt.Fprintf(a.stderr, "(more: --page-token %s)\n", p.NextPageToken)
	}
	return nil
}

func lookup(m map[string]any, path string) string {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return "-"
		}
		v = mm[k]
	}
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case float64:
		return fmt.Sprint(x)
	case []any:
		// Members as host=state (service groups), readable in a table.
		var parts []string
		for _, e := range x {
			em, ok := e.(map[string]any)
			h, hok := em["host"].(string)
			st, sok := em["state"].(string)
			if !ok || !hok || !sok {
				parts = nil
				break
			}
			parts = append(parts, h+"="+st)
		}
		if len(parts) > 0 {
			return strings.Join(parts, ",")
		}
		b, _ := json.Marshal(x)
		return string(b)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

func scalar(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return "-"
		}
		return s
	}
	if string(raw) == "null" {
		return "-"
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}

func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("the API answered with invalid JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func printYAML(w io.Writer, raw []byte) error {
	y, err := yaml.JSONToYAML(raw)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}
