package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// A connection's logger is built only when a line is logged at a level in
// force, and then carries every field given so far, in order; fields added
// later appear on later lines.
func TestConnLogLazy(t *testing.T) {
	var buf bytes.Buffer
	base := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	l := newConnLog(base, false, "conn", "p-1", "listener", "edge")
	l.with("remote", "127.0.0.1:5")
	l.Debug("not shown")
	l.Trace("not shown either")
	if l.built.Load() != nil {
		t.Fatal("logger built for lines below the level")
	}
	l.Info("first")
	l.with("calling_ae", "A")
	l.Info("second")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
	if !strings.Contains(lines[0], "first: conn=p-1 listener=edge remote=127.0.0.1:5") || strings.Contains(lines[0], "calling_ae") {
		t.Errorf("first line %q", lines[0])
	}
	for _, f := range []string{"second:", "conn=p-1", "listener=edge", "remote=127.0.0.1:5", "calling_ae=A"} {
		if !strings.Contains(lines[1], f) {
			t.Errorf("second line %q lacks %s", lines[1], f)
		}
	}
	quiet := func(eager bool) float64 {
		return testing.AllocsPerRun(100, func() {
			l := newConnLog(base, eager, "conn", "p-1", "listener", "edge")
			l.with("remote", "x")
			l.with("calling_ae", "A", "called_ae", "B")
			l.with("client_cn", "c")
			l.Debug("quiet")
		})
	}
	if lazy, eager := quiet(false), quiet(true); lazy > 8 || lazy*3 > eager {
		t.Errorf("%.0f allocations for a connection that logs nothing (%.0f built as fields came)", lazy, eager)
	}
}
