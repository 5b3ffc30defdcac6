package doccheck

import (
	"reflect"
	"strings"
	"testing"
)

const sample = `# Title

## edge

| attribute | type |
| --- | --- |
| ` + "`listen`" + ` | address |
| plain cell | x |

### edge.sub

| attribute | type |
| --- | --- |
| ` + "`inner`" + ` | bool |

## backend "NAME"

| metric | x |
| --- | --- |
| ` + "`a_total`, `b`" + ` | counter |
`

func TestPage(t *testing.T) {
	p := Page{Name: "sample.md", Text: sample}
	sec, ok := p.Section("edge", false)
	if !ok || !strings.Contains(sec, "`inner`") || strings.Contains(sec, "a_total") {
		t.Errorf("Section(edge) = %q, %v: want edge and edge.sub, not backend", sec, ok)
	}
	own, ok := p.Own("edge", false)
	if !ok || strings.Contains(own, "`inner`") || !strings.Contains(own, "`listen`") {
		t.Errorf("Own(edge) = %q, %v: want edge without edge.sub", own, ok)
	}
	if _, ok := p.Section("backend", false); ok {
		t.Error(`Section("backend", false) matched "backend \"NAME\""`)
	}
	if _, ok := p.Section("backend", true); !ok {
		t.Error(`Section("backend", true) did not match "backend \"NAME\""`)
	}
	if _, ok := p.Section("edg", true); ok {
		t.Error(`Section("edg", true) matched "edge"`)
	}
	if row, ok := Row(sec, "inner"); !ok || !strings.Contains(row, "bool") {
		t.Errorf("Row(inner) = %q, %v", row, ok)
	}
	if _, ok := Row(sec, "listen`"); ok {
		t.Error("Row matched a partial cell")
	}
	if got := Keys(p.Text, "attribute"); !reflect.DeepEqual(got, []string{"listen", "inner"}) {
		t.Errorf("Keys(attribute) = %q", got)
	}
	if got := Keys(p.Text, "metric"); !reflect.DeepEqual(got, []string{"a_total"}) {
		t.Errorf("Keys(metric) = %q", got)
	}
}
