package proxy

import (
	"go/ast"
	"go/token"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomedge/dicomedge/internal/doccheck"
)

// metricDef is a metric as the code declares it.
type metricDef struct {
	labels []string
	where  string
}

// declaredMetrics finds every prometheus.*Opts literal in the module's
// non-test code, with the label names of the *Vec constructor it is passed
// to, so that a metric registered anywhere is found.
func declaredMetrics(t *testing.T) map[string]metricDef {
	t.Helper()
	out := map[string]metricDef{}
	seen := map[*ast.CompositeLit]bool{} // an Opts literal is read once, with its call's labels
	doccheck.GoFiles(t, func(fset *token.FileSet, path string, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, isCall := n.(*ast.CallExpr)
			var lits []*ast.CompositeLit
			if isCall {
				for _, a := range call.Args {
					if cl, ok := a.(*ast.CompositeLit); ok {
						lits = append(lits, cl)
					}
				}
			} else if cl, ok := n.(*ast.CompositeLit); ok {
				lits = append(lits, cl)
			}
			for _, cl := range lits {
				if seen[cl] {
					continue
				}
				seen[cl] = true
				sel, ok := cl.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					continue
				}
				if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
					continue
				}
				where := fset.Position(cl.Pos()).String()
				name := ""
				for _, e := range cl.Elts {
					if kv, ok := e.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
							var ok bool
							if name, ok = doccheck.StringLit(kv.Value); !ok {
								t.Errorf("%s: metric Name is not a string literal; write the full name there so that docs/metrics.md can be checked", where)
							}
						}
					}
				}
				if name == "" {
					continue
				}
				def := out[name]
				def.where = where
				if isCall && len(call.Args) > 1 {
					if ls, ok := call.Args[1].(*ast.CompositeLit); ok {
						for _, e := range ls.Elts {
							if s, ok := doccheck.StringLit(e); ok {
								def.labels = append(def.labels, s)
							}
						}
					}
				}
				out[name] = def
			}
			return true
		})
	})
	return out
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// registeredMetrics are the metric names NewMetrics registers: the
// families it gathers plus the descriptors of its collector fields (a *Vec
// with no series yet is not gathered).
func registeredMetrics(t *testing.T, m *Metrics) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Field(i).IsNil() {
			continue
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if sm := fqNameRE.FindStringSubmatch(d.String()); sm != nil {
				names[sm[1]] = true
			}
		}
	}
	return names
}

// TestDocsCoverMetrics keeps docs/metrics.md true to the code: every metric
// the edge registers or declares has a row naming each of its labels, and
// the standard collectors' prefixes are mentioned.
func TestDocsCoverMetrics(t *testing.T) {
	page := doccheck.Read(t, "metrics.md")
	declared := declaredMetrics(t)
	m := NewMetrics()
	registered := registeredMetrics(t, m)
	all := map[string]bool{}
	for n := range declared {
		all[n] = true
	}
	for n := range registered {
		all[n] = true
	}
	var names []string
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(declared) < 9 {
		t.Fatalf("found only %d declared metrics; the scan is broken", len(declared))
	}
	prefixes := map[string]bool{}
	for _, n := range names {
		if !strings.HasPrefix(n, "dicomedge_") {
			prefix, _, _ := strings.Cut(n, "_")
			prefixes[prefix+"_*"] = true
			continue
		}
		if registered[n] && declared[n].where == "" {
			t.Errorf("metric %s is registered but its declaration was not found; write its Name as a string literal in a prometheus.*Opts", n)
		}
		row, ok := doccheck.Row(page.Text, n)
		if !ok {
			t.Errorf("%s: metric %s (%s) is not documented: add \"| `%s` | <type> | %s | <meaning> |\" to the table of \"## Metrics\"",
				page.Name, n, declared[n].where, n, labelCell(declared[n].labels))
			continue
		}
		for _, l := range declared[n].labels {
			if !strings.Contains(row, "`"+l+"`") {
				t.Errorf("%s: the row of %s does not name its label %s: add `%s` (and its values) to the labels cell", page.Name, n, l, l)
			}
		}
	}
	for _, k := range doccheck.Keys(page.Text, "metric") {
		if !all[k] {
			t.Errorf("%s: documents metric %s, which the edge no longer declares or registers: remove its row or correct its name", page.Name, k)
		}
	}
	for p := range prefixes {
		if !strings.Contains(page.Text, "`"+p+"`") {
			t.Errorf("%s: metrics %s (a standard collector) are exported but not mentioned: name `%s` under \"## Metrics\"", page.Name, p, p)
		}
	}
}

func labelCell(labels []string) string {
	if len(labels) == 0 {
		return ""
	}
	return "`" + strings.Join(labels, "`, `") + "` (values)"
}

// TestDocsCoverTLSFailureReasons keeps docs/refusals.md true to the
// classification: every reason exported at start (all a client can cause)
// and the summary record's reason have a row in the TLS table.
func TestDocsCoverTLSFailureReasons(t *testing.T) {
	page := doccheck.Read(t, "refusals.md")
	sec, ok := page.Section("TLS", false)
	if !ok {
		t.Fatalf("%s: no \"## TLS\" section", page.Name)
	}
	mfs, err := NewMetrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, mf := range mfs {
		if mf.GetName() != "dicomedge_tls_handshake_failures_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "reason" {
					reasons = append(reasons, lp.GetValue())
				}
			}
		}
	}
	if len(reasons) < 10 {
		t.Fatalf("found only %d TLS failure reasons", len(reasons))
	}
	for _, r := range reasons {
		if _, ok := doccheck.Row(sec, r); !ok {
			t.Errorf("%s: tls.failed reason %q is not documented: add \"| `%s` | <cause> | <TLS alert the edge sends> |\" to the table of \"## TLS\"", page.Name, r, r)
		}
	}
	if !strings.Contains(sec, "`"+TLSFailSuppressedReason+"`") {
		t.Errorf("%s: the summary reason %q is not mentioned in \"## TLS\"", page.Name, TLSFailSuppressedReason)
	}
}

// TestDocsCoverRefusedReasons keeps docs/refusals.md true to the reasons a
// connection.refused record may carry.
func TestDocsCoverRefusedReasons(t *testing.T) {
	page := doccheck.Read(t, "refusals.md")
	sec, ok := page.Section("Before the TLS handshake", false)
	if !ok {
		t.Fatalf("%s: no \"## Before the TLS handshake\" section", page.Name)
	}
	for _, r := range RefusedReasons {
		if !strings.Contains(sec, "| `"+r+"` |") {
			t.Errorf("%s: connection.refused reason %q is not documented: add \"| <situation> | `%s` |\" to the table of \"## Before the TLS handshake\"", page.Name, r, r)
		}
	}
}
