// Package doccheck helps tests hold the user reference in docs/ to the code:
// it reads a page, cuts it into sections by heading, and finds table rows and
// Go declarations, so that each package's docs test can derive what must be
// documented from the code itself and say exactly what to add where.
package doccheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Root is the module's root directory (where go.mod is), found from the
// test's working directory.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("doccheck: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Page is one file of docs/.
type Page struct {
	Name string // e.g. "docs/metrics.md"
	Text string
}

// Read reads docs/name.
func Read(t testing.TB, name string) Page {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Root(t), "docs", name))
	if err != nil {
		t.Fatalf("the user reference docs/%s is missing: %v", name, err)
	}
	return Page{Name: "docs/" + name, Text: string(b)}
}

// Section returns the text under the heading whose title (the text after the
// #s) is title, or whose first word is title when prefix is set, up to the
// next heading of the same or a higher level.
func (p Page) Section(title string, prefix bool) (string, bool) {
	return p.section(title, prefix, false)
}

// Own is Section without the subsections: the text up to the next heading
// of any level.
func (p Page) Own(title string, prefix bool) (string, bool) {
	return p.section(title, prefix, true)
}

func (p Page) section(title string, prefix, own bool) (string, bool) {
	lines := strings.Split(p.Text, "\n")
	for i, l := range lines {
		level, text := heading(l)
		if level == 0 {
			continue
		}
		if text != title && !(prefix && strings.HasPrefix(text, title+" ")) {
			continue
		}
		var b strings.Builder
		for _, m := range lines[i+1:] {
			if lv, _ := heading(m); lv > 0 && (own || lv <= level) {
				break
			}
			b.WriteString(m)
			b.WriteByte('\n')
		}
		return b.String(), true
	}
	return "", false
}

func heading(line string) (level int, text string) {
	n := len(line) - len(strings.TrimLeft(line, "#"))
	if n == 0 || n > 6 || !strings.HasPrefix(line[n:], " ") {
		return 0, ""
	}
	return n, strings.TrimSpace(line[n:])
}

// Row returns the first table row of text whose first cell is exactly
// "`key`" (the row of an attribute, flag, metric or event).
func Row(text, key string) (string, bool) {
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "|") {
			continue
		}
		cells := strings.Split(l, "|")
		if len(cells) > 2 && strings.TrimSpace(cells[1]) == "`"+key+"`" {
			return l, true
		}
	}
	return "", false
}

// GoFiles parses every non-test .go file of the module (testdata and
// hidden directories left out) and calls fn for each.
func GoFiles(t testing.TB, fn func(fset *token.FileSet, path string, f *ast.File)) {
	t.Helper()
	root := Root(t)
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// Positions relative to the module root read well in messages.
		rel, _ := filepath.Rel(root, path)
		f, err := parser.ParseFile(fset, rel, src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		fn(fset, rel, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// StringConsts returns the string constants of the package in dir (relative
// to the module root) whose names start with prefix, by name.
func StringConsts(t testing.TB, dir, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	GoFiles(t, func(_ *token.FileSet, path string, f *ast.File) {
		if filepath.Dir(path) != filepath.Clean(dir) {
			return
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
						continue
					}
					if s, ok := StringLit(vs.Values[i]); ok {
						out[name.Name] = s
					}
				}
			}
		}
	})
	return out
}

// StringLit returns the value of a string literal expression.
func StringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

// Keys returns the first cells of the rows of every table in text whose
// header's first cell is header, each as written between its first pair
// of backticks (cells without backticks are left out). Tests use it to find
// documented names the code no longer has.
func Keys(text, header string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "|") {
			in = false
			continue
		}
		cells := strings.Split(l, "|")
		if len(cells) < 3 {
			continue
		}
		first := strings.TrimSpace(cells[1])
		switch {
		case first == header:
			in = true
			continue
		case !in || strings.Trim(first, "-: ") == "":
			continue
		}
		if _, rest, ok := strings.Cut(first, "`"); ok {
			if key, _, ok := strings.Cut(rest, "`"); ok {
				out = append(out, key)
			}
		}
	}
	return out
}
