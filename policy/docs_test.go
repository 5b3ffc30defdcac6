package policy

import (
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/doccheck"
)

// schemaBlock is one block type of the gohcl schema: its dotted path
// without labels ("tls.acme", "rule.when") and its attributes.
type schemaBlock struct {
	path  string
	attrs []string
}

// schemaBlocks walks the gohcl struct tags from t, so that what docs/policy.md
// must cover is what the decoder accepts, not a copy of it.
func schemaBlocks(t *testing.T, typ reflect.Type, path string) []schemaBlock {
	t.Helper()
	var out []schemaBlock
	var here schemaBlock
	here.path = path
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("hcl")
		name, kind, _ := strings.Cut(tag, ",")
		switch kind {
		case "attr", "optional":
			here.attrs = append(here.attrs, name)
		case "block":
			et := f.Type
			for et.Kind() == reflect.Slice || et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			sub := name
			if path != "" {
				sub = path + "." + name
			}
			out = append(out, schemaBlocks(t, et, sub)...)
		case "label", "label_range", "def_range", "range", "":
		default:
			t.Fatalf("policy schema %s field %s has hcl tag %q, which this test cannot enumerate: teach schemaBlocks about it", typ.Name(), f.Name, tag)
		}
	}
	if path != "" {
		out = append([]schemaBlock{here}, out...)
	}
	return out
}

// TestDocsCoverPolicySchema keeps docs/policy.md true to the schema: every
// block has a section headed by its dotted path, and every attribute the
// decoder accepts has a row in its block's table.
func TestDocsCoverPolicySchema(t *testing.T) {
	page := doccheck.Read(t, "policy.md")
	blocks := schemaBlocks(t, reflect.TypeFor[fileSchema](), "")
	if len(blocks) < 10 {
		t.Fatalf("found only %d schema blocks; the walk is broken", len(blocks))
	}
	for _, b := range blocks {
		level := strings.Repeat("#", 2+strings.Count(b.path, "."))
		// Own section: a nested block's rows must not stand in for its parent's.
		sec, ok := page.Own(b.path, true)
		if !ok {
			t.Errorf("%s: no section for block %s: add a heading \"%s %s\" (labelled blocks: %s %s \"NAME\") with a table \"| attribute | type | default | meaning |\"",
				page.Name, b.path, level, b.path, level, b.path)
			continue
		}
		attrs := append([]string(nil), b.attrs...)
		sort.Strings(attrs)
		known := map[string]bool{}
		for _, a := range attrs {
			known[a] = true
		}
		for _, k := range doccheck.Keys(sec, "attribute") {
			if !known[k] {
				t.Errorf("%s: section \"%s %s\" documents attribute %s, which the schema does not accept: remove its row or correct its name",
					page.Name, level, b.path, k)
			}
		}
		for _, a := range attrs {
			if _, ok := doccheck.Row(sec, a); !ok {
				t.Errorf("%s: section \"%s %s\" has no row for attribute %s.%s: add \"| `%s` | <type> | <default, from the policy package> | <meaning> |\" to its table",
					page.Name, level, b.path, b.path, a, a)
			}
		}
	}
}

// shortDuration writes d as policy.hcl would ("10m", not "10m0s").
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// TestDocsPolicyDefaults holds the default column of docs/policy.md to what
// the loader fills in when an attribute is left out.
func TestDocsPolicyDefaults(t *testing.T) {
	page := doccheck.Read(t, "policy.md")
	cfg, diags := Load("/etc/dicomedge/policy.hcl", []byte(`
tls {
  client_ca = ["ca.pem"]
  acme { domains = ["edge.example.org"] }
}
audit {
  syslog { address = "siem.example.org:6514" }
}
listener "inside" { listen = ":11112" }
rule "r" {
  reject {}
}
`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	q := strconv.Quote
	d := func(x time.Duration) string { return q(shortDuration(x)) }
	rj := cfg.Policy.Evaluate(&Input{})
	cases := []struct{ block, attr, want string }{
		{"edge", "ae_title", q(cfg.Edge.AETitle)},
		{"edge", "listen", q(cfg.Edge.Listen)},
		{"edge", "max_pdu_length", strconv.Itoa(int(cfg.Edge.MaxPDULength))},
		{"edge", "max_associations", strconv.Itoa(cfg.Edge.MaxAssociations)},
		{"edge", "artim_timeout", d(cfg.Edge.ARTIMTimeout)},
		{"edge", "idle_timeout", d(cfg.Edge.IdleTimeout)},
		{"edge", "drain_timeout", d(cfg.Edge.DrainTimeout)},
		{"tls", "profile", q(cfg.TLS.Profile)},
		{"tls.acme", "directory", q(cfg.TLS.ACME.Directory)},
		{"tls.acme", "http_port", strconv.Itoa(cfg.TLS.ACME.HTTPPort)},
		{"audit", "file", q(strings.TrimPrefix(cfg.Audit.File, "/etc/dicomedge/"))},
		{"audit", "patient_ids", q(cfg.Audit.PatientIDs)},
		{"audit", "fsync", d(cfg.Audit.Fsync)},
		{"audit", "on_full", q(cfg.Audit.OnFull)},
		{"audit.syslog", "format", q(cfg.Audit.Syslog.Format)},
		{"listener", "tls", strconv.FormatBool(cfg.Listener("inside").TLS)},
		{"rule.reject", "reason", q(rj.Reject.ReasonName)},
		{"rule.reject", "transient", strconv.FormatBool(rj.Reject.Result == 2)},
	}
	for _, c := range cases {
		sec, ok := page.Own(c.block, true)
		if !ok {
			t.Errorf("%s: no section for block %s", page.Name, c.block)
			continue
		}
		row, ok := doccheck.Row(sec, c.attr)
		if !ok {
			t.Errorf("%s: no row for %s.%s", page.Name, c.block, c.attr)
			continue
		}
		cells := strings.Split(row, "|")
		if len(cells) < 5 || strings.TrimSpace(cells[3]) != "`"+c.want+"`" {
			t.Errorf("%s: %s.%s: the default column says %q; the loader's default is `%s`", page.Name, c.block, c.attr,
				strings.TrimSpace(cells[min(3, len(cells)-1)]), c.want)
		}
	}
}
