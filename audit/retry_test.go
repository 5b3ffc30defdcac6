package audit

import (
	"errors"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sickDisk fails writes while sick is true: with partial set it writes half
// of each batch before failing, as a disk filling up does.
type sickDisk struct {
	mu      sync.Mutex
	w       io.Writer
	sick    bool
	partial bool
	fails   int // remaining failures; <0 means until healed
	calls   int
}

func (d *sickDisk) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.sick && d.fails != 0 {
		if d.fails > 0 {
			d.fails--
		}
		n := 0
		if d.partial && len(b) > 1 {
			n, _ = d.w.Write(b[:len(b)/2])
		}
		return n, syscall.ENOSPC
	}
	return d.w.Write(b)
}

func (d *sickDisk) heal() {
	d.mu.Lock()
	d.sick = false
	d.mu.Unlock()
}

// A failed batch was once discarded while the chain advanced, so
// records vanished silently even with on_full "block", and verify then
// reported the hole as tampering. Now the batch is kept and retried.
func TestWriteFailureKeepsRecords(t *testing.T) {
	cases := []struct {
		name    string
		partial bool
	}{
		{"write refused", false},
		{"short writes", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &sickDisk{sick: true, partial: tc.partial, fails: 3}
			cfg := Config{Fsync: 10 * time.Millisecond}
			cfg.wrap = func(w io.Writer) io.Writer { d.w = w; return d }
			w := openT(t, cfg)
			writeN(t, w, 20)
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if n, err := Verify(Files(w.cfg.File)); err != nil || n != 20 {
				t.Fatalf("Verify = %d, %v; want all 20 records", n, err)
			}
			if got := w.WriteErrors(); got != 3 {
				t.Errorf("WriteErrors = %d, want 3", got)
			}
			if w.Failing() {
				t.Error("still Failing after the disk recovered")
			}
		})
	}
}

// While the disk refuses writes the writer reports Failing, and with
// on_full "block" the queue fills and Log waits: back-pressure, not loss.
func TestFailingDiskStallsQueue(t *testing.T) {
	d := &sickDisk{sick: true, fails: -1}
	cfg := Config{QueueSize: 4, Fsync: 10 * time.Millisecond}
	cfg.wrap = func(w io.Writer) io.Writer { d.w = w; return d }
	w := openT(t, cfg)
	const total = 20
	done := logBehindFailingRecord(t, w, total)
	deadline := time.Now().Add(10 * time.Second)
	for !(w.Failing() && w.QueueDepth() == cfg.QueueSize) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !w.Failing() || w.QueueDepth() != cfg.QueueSize {
		t.Fatalf("Failing %v, queue depth %d; want true and a full queue of %d", w.Failing(), w.QueueDepth(), cfg.QueueSize)
	}
	select {
	case <-done:
		t.Fatal("all Log calls returned while the disk refused every write")
	default:
	}
	d.heal()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Log still blocked 10 s after the disk recovered")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n, err := Verify(Files(w.cfg.File)); err != nil || n != total {
		t.Fatalf("Verify = %d, %v; want %d", n, err, total)
	}
	if w.Failing() || w.WriteErrors() == 0 {
		t.Errorf("Failing %v WriteErrors %d after recovery", w.Failing(), w.WriteErrors())
	}
}

// A disk that never recovers must not hang Close (it retries for a grace
// period, then gives up), and the anchor must not claim the records given
// up, or the next start would refuse the log as truncated.
func TestCloseGivesUpOnDeadDisk(t *testing.T) {
	d := &sickDisk{sick: true, fails: -1}
	cfg := Config{QueueSize: 4, Fsync: 10 * time.Millisecond, closeGrace: 300 * time.Millisecond}
	cfg.wrap = func(w io.Writer) io.Writer { d.w = w; return d }
	w := openT(t, cfg)
	done := logBehindFailingRecord(t, w, 10) // the last ones block: the queue is full
	deadline := time.Now().Add(10 * time.Second)
	for w.QueueDepth() < cfg.QueueSize && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case err := <-closed:
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Close = %v, want the write error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a dead disk")
	}
	<-done
	w2, err := Open(Config{File: w.cfg.File})
	if err != nil {
		t.Fatalf("reopen after records were given up: %v", err)
	}
	writeN(t, w2, 2)
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(Files(w.cfg.File)); err != nil || n != 2 {
		t.Fatalf("Verify = %d, %v", n, err)
	}
}

// logBehindFailingRecord logs one record and waits until the writer is
// failing on it, then logs records 1..total-1 from a goroutine (done is
// closed when every Log has returned). The first record alone makes the
// writer stuck before the rest arrive; otherwise it could take them all
// into its failing batch.
func logBehindFailingRecord(t *testing.T, w *Writer, total int) (done chan struct{}) {
	t.Helper()
	w.Log(sampleEvent(0))
	deadline := time.Now().Add(10 * time.Second)
	for !w.Failing() {
		if time.Now().After(deadline) {
			t.Fatal("the writer never failed on the sick disk")
		}
		time.Sleep(time.Millisecond)
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < total; i++ {
			w.Log(sampleEvent(i))
		}
	}()
	return done
}
