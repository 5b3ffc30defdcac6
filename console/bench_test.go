package console

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/policy"
	"github.com/dicomedge/dicomedge/proxy"
)

// benchRecords is the size of the generated log: the goal is pages within
// 200 ms on a 1,000,000-record audit log (DESIGN.md). DICOMEDGE_BENCH_RECORDS
// overrides it for a quick look.
func benchRecords() int {
	if n, err := strconv.Atoi(os.Getenv("DICOMEDGE_BENCH_RECORDS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

const pageGoal = 200 * time.Millisecond

// BenchmarkPages times the heaviest pages, signed in, over HTTP, on a
// generated log of benchRecords records (rotated files, 24 h of traffic),
// and reports each page's time beside the 200 ms goal.
func BenchmarkPages(b *testing.B) {
	dir := b.TempDir()
	n := benchRecords()
	end := time.Now().UTC()
	start := time.Now()
	file := genLog(b, dir, n, end, 256<<20)
	gen := time.Since(start)
	cfg := consolePolicy(b, dir, "")
	cfg2 := *cfg
	cfg2.Audit.File = file
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	con, err := New(Options{Config: func() *policy.Config { return &cfg2 }, AuditFile: file,
		Live: func() []proxy.OpenAssociation {
			return []proxy.OpenAssociation{{CallingAE: "CLINA_MOD00", CalledAE: "MAINPACS", Listener: "edge", Rule: "clinic-a",
				Action: "relay", Backend: "pacs", Client: &audit.Client{CN: "mod00"}, Since: time.Now().Add(-time.Minute)}}
		}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start = time.Now()
	go func() { _ = con.Run(ctx) }()
	for !con.Index().CaughtUp() {
		time.Sleep(10 * time.Millisecond)
	}
	indexTook := time.Since(start)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.Logf("%d records generated in %v, indexed in %v; index heap %.0f MB", con.Index().Len(), gen.Round(time.Millisecond),
		indexTook.Round(time.Millisecond), float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))

	srv := httptest.NewServer(con.Handler())
	defer srv.Close()
	tc := &testConsole{Console: con, srv: srv}
	c := client(b)
	tc.login(b, c, "op", "op-pw")
	pages := []struct{ name, path string }{
		{"overview", "/console/"},
		{"audit-filtered", "/console/audit?calling_ae=CLINC_MOD07&event=association.*"},
		{"audit-client-24h", "/console/audit?client=mod1*&since=24h"},
		{"clients", "/console/clients"},
		{"audit-unfiltered-page-100", "/console/audit?offset=5000"},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				resp, err := c.Get(srv.URL + p.path)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", p.path, resp.StatusCode)
				}
			}
			ms := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
			b.ReportMetric(ms, "ms/page")
			b.ReportMetric(float64(pageGoal.Milliseconds()), "goal-ms")
			b.ReportMetric(ms/float64(pageGoal.Milliseconds()), "of-goal")
		})
	}
}
