package policy

import (
	"reflect"
	"sort"
	"strings"
	"testing"

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
