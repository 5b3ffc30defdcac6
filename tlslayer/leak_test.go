package tlslayer

import (
	"runtime"
	"testing"
	"time"
)

// TestCloseStopsGoroutines: the file watcher and handshakes leave nothing
// running after Close.
func TestCloseStopsGoroutines(t *testing.T) {
	f := newFixture(t, false)
	before := runtime.NumGoroutine()
	for range 5 {
		cfg := f.config()
		cfg.PollInterval = 10 * time.Millisecond
		l, err := New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		_ = l.Close() // idempotent
	}
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines %d > %d after Close\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
