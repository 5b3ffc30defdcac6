package audit

import (
	"go/ast"
	"go/token"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/dicomedge/dicomedge/internal/doccheck"
)

// eventNames are the audit event names the code defines: the Event*
// constants of this package and any string literal given as the Event field
// of a composite literal anywhere in the module.
func eventNames(t *testing.T) map[string]string {
	t.Helper()
	names := map[string]string{} // name → where it is defined
	for c, v := range doccheck.StringConsts(t, "audit", "Event") {
		names[v] = "audit." + c
	}
	doccheck.GoFiles(t, func(fset *token.FileSet, path string, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			kv, ok := n.(*ast.KeyValueExpr)
			if !ok {
				return true
			}
			if id, ok := kv.Key.(*ast.Ident); ok && id.Name == "Event" {
				if s, ok := doccheck.StringLit(kv.Value); ok {
					if _, known := names[s]; !known {
						names[s] = fset.Position(kv.Pos()).String()
					}
				}
			}
			return true
		})
	})
	return names
}

// jsonKeys lists the JSON keys of a record type's fields, recursing into
// the nested objects (client, user_identity).
func jsonKeys(typ reflect.Type, prefix string, out map[string]string) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if key == "" || key == "-" {
			continue
		}
		out[key] = prefix + key
		et := f.Type
		for et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		// Objects of this package (client, user_identity), not time.Time.
		if et.Kind() == reflect.Struct && et.PkgPath() == typ.PkgPath() {
			jsonKeys(et, prefix+key+".", out)
		}
	}
}

// TestDocsCoverAuditEvents keeps docs/audit.md true to the records the
// edge writes: every event name has a row in the events table and every
// field of a record is described.
func TestDocsCoverAuditEvents(t *testing.T) {
	page := doccheck.Read(t, "audit.md")
	events, ok := page.Section("Events", false)
	if !ok {
		t.Fatalf("%s: no \"## Events\" section", page.Name)
	}
	names := eventNames(t)
	if len(names) < 9 {
		t.Fatalf("found only %d event names; the scan is broken", len(names))
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		if _, ok := doccheck.Row(events, n); !ok {
			t.Errorf("%s: event %q (%s) is not documented: add \"| `%s` | <when it is written> | <its fields> |\" to the table of \"## Events\"",
				page.Name, n, names[n], n)
		}
	}

	for _, k := range doccheck.Keys(events, "event") {
		if _, ok := names[k]; !ok {
			t.Errorf("%s: documents event %q, which the code does not define: remove its row or correct its name", page.Name, k)
		}
	}

	keys := map[string]string{}
	jsonKeys(reflect.TypeFor[Event](), "", keys)
	fields := make([]string, 0, len(keys))
	for k := range keys {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	for _, k := range fields {
		if !strings.Contains(page.Text, "`"+k+"`") {
			t.Errorf("%s: record field %q (%s) is not documented: name it as `%s` in \"## Fields every record has\" or in its event's row of \"## Events\"",
				page.Name, k, keys[k], k)
		}
	}
}
