package spool

import (
	"context"
	"errors"
	"strings"
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
