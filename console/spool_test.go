package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/spool"
)

// refusingSender refuses every instance for good, as a backend answering
// 0xC000 would: the forwarder moves each to failed/.
type refusingSender struct{}

func (refusingSender) Send(_ context.Context, batch []*spool.Entry) []error {
	errs := make([]error, len(batch))
	for i := range errs {
		errs[i] = spool.Permanent(errors.New("status 0xC000"))
	}
	return errs
}
func (refusingSender) Batch() (int, int64) { return 8, 1 << 20 }
func (refusingSender) Close() error        { return nil }

// TestSpoolActions: an operator retries a backend's failed instances and
// purges them from the overview's forms, each action audited; a purge
// without an age, or of a backend the spool does not hold, does nothing;
// a viewer's retry is refused.
func TestSpoolActions(t *testing.T) {
	cfg := consolePolicy(t, t.TempDir(), "")
	tc := startConsole(t, cfg, nil)
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(t.TempDir(), "spool"), Audit: func(e audit.Event) { tc.aw.Log(e) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	for i := range 3 {
		w, err := sp.Create("pacs", spool.Meta{SOPClass: "1.2.840.10008.5.1.4.1.1.7", SOPInstance: fmt.Sprintf("2.25.9.%d", i),
			TransferSyntax: "1.2.840.10008.1.2.1", CallingAE: "MODALITY", CalledAE: "PACS"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&spool.Forwarder{Spool: sp, Backend: "pacs", Sender: refusingSender{}}).Run(ctx); close(done) }()
	count := func(where string) int {
		l, _ := sp.List("pacs", where)
		return len(l)
	}
	for deadline := time.Now().Add(10 * time.Second); count(spool.Failed) < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("failed/ holds %d", count(spool.Failed))
		}
	}
	cancel()
	<-done
	for _, a := range SpoolActions(sp) {
		tc.AddAction(a)
	}

	viewer := client(t)
	vtok := tc.login(t, viewer, "viewer", "viewer-pw")
	if resp, _ := post(t, viewer, tc.srv.URL+"/console/action/spool-retry", url.Values{"csrf": {vtok}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("viewer retry: %d", resp.StatusCode)
	}
	c := client(t)
	tok := tc.login(t, c, "op", "op-pw")
	if code, body := get(t, c, tc.srv.URL+"/console/"); code != 200 || !strings.Contains(body, `name="older_than"`) {
		t.Errorf("the overview has no purge form (%d)", code)
	}
	resp, body := post(t, c, tc.srv.URL+"/console/action/spool-retry", url.Values{"csrf": {tok}, "backend": {"pacs"}})
	if resp.StatusCode != http.StatusOK || count(spool.Failed) != 0 || count(spool.Queued) != 3 {
		t.Fatalf("retry: %d, failed %d, queued %d\n%s", resp.StatusCode, count(spool.Failed), count(spool.Queued), body)
	}
	for _, form := range []url.Values{{"csrf": {tok}, "backend": {"pacs"}}, {"csrf": {tok}, "backend": {"other"}, "older_than": {"0"}},
		{"csrf": {tok}, "older_than": {"soon"}}} {
		if resp, _ := post(t, c, tc.srv.URL+"/console/action/spool-purge", form); resp.StatusCode != http.StatusUnprocessableEntity {
			t.Errorf("purge %v: %d, want 422", form, resp.StatusCode)
		}
	}
	if count(spool.Queued) != 3 {
		t.Fatalf("a refused purge removed instances: %d queued", count(spool.Queued))
	}
	resp, body = post(t, c, tc.srv.URL+"/console/action/spool-purge", url.Values{"csrf": {tok}, "backend": {"pacs"}, "older_than": {"0"}})
	if resp.StatusCode != http.StatusOK || count(spool.Queued) != 0 || !strings.Contains(body, "3 instances purged") {
		t.Fatalf("purge: %d, queued %d\n%s", resp.StatusCode, count(spool.Queued), body)
	}
	if n := len(tc.eventsN(t, audit.EventSpoolPurged, 3)); n != 3 {
		t.Errorf("%d spool.purged records, want 3", n)
	}
	acts := tc.eventsN(t, audit.EventConsoleAction, 6)
	var ok int
	for _, e := range acts {
		if e.User == "op" && (strings.HasPrefix(e.Detail, "spool-retry: ok: 3 ") || strings.HasPrefix(e.Detail, "spool-purge: ok: 3 ")) {
			ok++
		}
	}
	if ok != 2 {
		t.Errorf("console.action records: %+v", acts)
	}
}
