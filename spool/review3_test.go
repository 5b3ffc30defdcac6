package spool

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
)

// A backend chooses the text of its refusals (a C-STORE-RSP Error Comment
// of any length, a token endpoint's page): what the forwarder keeps of it
// in state.json, a failed/ sidecar and the audit record is bounded.
func TestForwarderBoundsTheBackendsErrorText(t *testing.T) {
	s, rec := openTest(t, Config{})
	store(t, s, "pacs", 1, []byte("x"))
	store(t, s, "pacs", 2, []byte("x"))
	long := strings.Repeat("é", 40<<10)
	fs := &fakeSender{fail: map[string]error{
		meta(1).SOPInstance: Permanent(errors.New("refused: " + long)),
		meta(2).SOPInstance: errors.New("out of resources: " + long),
	}}
	fw := &Forwarder{Spool: s, Backend: "pacs", Sender: fs, MinBackoff: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fw.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	var st Stats
	for {
		st, _ = s.BackendStats("pacs")
		if st.State.LastError != "" && st.Failed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := len(st.State.LastError); n > maxReason || !strings.HasPrefix(st.State.LastError, "out of resources: é") {
		t.Errorf("state.json keeps %d bytes of the error: %.60q", n, st.State.LastError)
	}
	failed, _ := s.List("pacs", Failed)
	if len(failed) != 1 || len(failed[0].Meta.LastError) > maxReason || !strings.HasPrefix(failed[0].Meta.LastError, "refused: é") {
		t.Errorf("failed/ sidecar keeps %d bytes", len(failed[0].Meta.LastError))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, e := range rec.events {
		if e.Event == audit.EventSpoolFailed && len(e.Detail) > maxReason {
			t.Errorf("spool.failed record carries %d bytes of detail", len(e.Detail))
		}
	}
}

// batchSender answers a fixed outcome per SOP instance and counts sends.
type batchSender struct {
	mu      sync.Mutex
	outcome map[string]error
	sent    map[string]int
}

func (b *batchSender) Batch() (int, int64) { return 8, 1 << 20 }
func (b *batchSender) Close() error        { return nil }
func (b *batchSender) Send(_ context.Context, batch []*Entry) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs := make([]error, len(batch))
	for i, e := range batch {
		b.sent[e.Meta.SOPInstance]++
		errs[i] = b.outcome[e.Meta.SOPInstance]
	}
	return errs
}

// A request of several instances (STOW-RS) answers each: one kept back
// by a transient failure does not make the forwarder forget what the same
// answer said of the others. Those stored are removed and audited at once
// (not sent again on every retry), those refused for good go to failed/
// (not retried with the one that waits).
func TestForwarderActsOnEveryOutcomeOfABatch(t *testing.T) {
	s, rec := openTest(t, Config{})
	for i := 1; i <= 3; i++ {
		store(t, s, "pacs", i, []byte("x"))
	}
	bs := &batchSender{sent: map[string]int{}, outcome: map[string]error{
		meta(1).SOPInstance: errors.New("failure reason 0xA700"),
		meta(3).SOPInstance: Permanent(errors.New("failure reason 0xC000")),
	}}
	fw := &Forwarder{Spool: s, Backend: "pacs", Sender: bs, MinBackoff: 50 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fw.Run(ctx); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		bs.mu.Lock()
		n := bs.sent[meta(1).SOPInstance]
		bs.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the forwarder did not retry")
		}
	}
	cancel()
	<-done
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if n := bs.sent[meta(2).SOPInstance]; n != 1 {
		t.Errorf("an instance the service stored was sent %d times", n)
	}
	if n := bs.sent[meta(3).SOPInstance]; n != 1 {
		t.Errorf("an instance the service refused for good was sent %d times", n)
	}
	q, _ := s.List("pacs", Queued)
	if len(q) != 1 || q[0].Meta.SOPInstance != meta(1).SOPInstance {
		t.Errorf("queue holds %d entries", len(q))
	}
	if f, _ := s.List("pacs", Failed); len(f) != 1 {
		t.Errorf("failed/ holds %d", len(f))
	}
	if rec.count(audit.EventSpoolForwarded) != 1 || rec.count(audit.EventSpoolFailed) != 1 {
		t.Errorf("records: forwarded %d, failed %d", rec.count(audit.EventSpoolForwarded), rec.count(audit.EventSpoolFailed))
	}
}

// Edges of a cluster that lost the same backend at once would retry it in
// step, every one at the same instants: each wait is drawn at random, at
// most the back-off and at least half of it.
func TestForwarderBackoffIsJittered(t *testing.T) {
	s, _ := openTest(t, Config{})
	store(t, s, "pacs", 1, []byte("x"))
	fs := &fakeSender{down: true}
	const b = 100 * time.Millisecond
	fw := &Forwarder{Spool: s, Backend: "pacs", Sender: fs, MinBackoff: b, MaxBackoff: b}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fw.Run(ctx); close(done) }()
	waits := map[time.Duration]bool{}
	for deadline := time.Now().Add(5 * time.Second); len(waits) < 3 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		st, _ := s.BackendStats("pacs")
		if w := st.State.NextAttempt.Sub(st.State.LastErrorTime); w > 0 {
			if w > b || w < b/2 {
				t.Errorf("waited %v with a back-off of %v", w, b)
			}
			waits[w] = true
		}
	}
	cancel()
	<-done
	if len(waits) < 3 {
		t.Errorf("every retry waited the same: %v", waits)
	}
}

// batchRecorder records the SOP Instance UIDs of each request.
type batchRecorder struct {
	mu      sync.Mutex
	batches [][]string
}

func (b *batchRecorder) Batch() (int, int64) { return 8, 1 << 20 }
func (b *batchRecorder) Close() error        { return nil }
func (b *batchRecorder) Send(_ context.Context, batch []*Entry) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var uids []string
	for _, e := range batch {
		uids = append(uids, e.Meta.SOPInstance)
	}
	b.batches = append(b.batches, uids)
	return make([]error, len(batch))
}

// An instance queued twice (its sender sent it again) never goes twice in
// one request: the answer names instances by UID and could not tell the
// copies apart. Both are delivered, in order.
func TestForwarderSendsAnInstanceOncePerRequest(t *testing.T) {
	s, _ := openTest(t, Config{})
	for _, i := range []int{1, 2, 1, 3} {
		store(t, s, "pacs", i, []byte("x"))
	}
	br := &batchRecorder{}
	fw := &Forwarder{Spool: s, Backend: "pacs", Sender: br, MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fw.Run(ctx); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if q, _ := s.List("pacs", Queued); len(q) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the forwarder did not drain the queue")
		}
	}
	cancel()
	<-done
	br.mu.Lock()
	defer br.mu.Unlock()
	var order []string
	for _, b := range br.batches {
		seen := map[string]bool{}
		for _, u := range b {
			if seen[u] {
				t.Errorf("one request carried %s twice: %v", u, b)
			}
			seen[u] = true
		}
		order = append(order, b...)
	}
	want := []string{meta(1).SOPInstance, meta(2).SOPInstance, meta(1).SOPInstance, meta(3).SOPInstance}
	if !slices.Equal(order, want) {
		t.Errorf("sent %v, want %v", order, want)
	}
}
