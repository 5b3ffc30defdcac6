package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// sfRule is the store-and-forward twin of storeRules: the same client and
// AE titles, the edge receives and spools.
func sfRule() string {
	return modalityRelayRule(`store_and_forward = true`)
}

// TestSpoolBenchmarkReport prints "store-and-forward ingest vs relay": 8
// storescu +tls senders at once into an edge that relays to storescp
// --ignore, and into one that spools (every instance fsync'd, renamed and
// its directory fsync'd before the acknowledgement; the backend down, so
// the forwarder waits), with 200 × 512 KiB and 2,000 × 16 KiB instances,
// rounds alternated, medians. Two spooling edges: one whose spool is never
// emptied, so every instance goes into a new file, and one purged before
// each round, so every instance goes into a spent file (as when the
// backend is up and the forwarder delivers as fast as instances arrive).
func TestSpoolBenchmarkReport(t *testing.T) {
	benchEnabled(t)
	testpeer.Require(t, "storescu", "storescp")
	rounds := benchRounds()
	const senders = 8
	large, small := 200, 2000
	if benchQuick() {
		large, small = 40, 400
	}
	dir := t.TempDir()
	largeFiles, _ := testpeer.WriteDICOMFiles(t, filepath.Join(dir, "large"), "BENCHL", large, 512, 512)
	smallFiles, _ := testpeer.WriteDICOMFiles(t, filepath.Join(dir, "small"), "BENCHS", small, 64, 128)
	p := sharedPKI(t)
	scp := testpeer.StartStoreSCP(t, "STORESCP", "--ignore")
	relayEdge := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO", "C-STORE"`), Quiet: true})
	down := testpeer.FreeAddr(t) // nothing listens: the forwarder backs off
	sfEdge := func() *testEdge {
		return startEdge(t, edgeOptions{Backends: backendBlock("pacs", down, "STORESCP") + "\nspool {\n  max_size = \"8GiB\"\n}\n", Rules: sfRule(), Quiet: true})
	}
	newEdge, reuseEdge := sfEdge(), sfEdge()
	for _, e := range []*testEdge{newEdge, reuseEdge} {
		if e.Server.Spool == nil {
			t.Fatal("the store-and-forward edge has no spool")
		}
	}
	tlsArgs := []string{"+tls", p.clientKey, p.clientCert, "+cf", p.ca}
	// send runs 8 storescu at once, each with its share of files, and
	// returns the wall time until the last one finished.
	send := func(e *testEdge, files []string) time.Duration {
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		start := time.Now()
		for g := range senders {
			var mine []string
			for i := g; i < len(files); i += senders {
				mine = append(mine, files[i])
			}
			wg.Go(func() {
				ctx := testpeer.Context(t, 10*time.Minute)
				args := append(append([]string{}, tlsArgs...), "-aet", "MODALITY1", "-aec", "MAINPACS", e.host(), strconv.Itoa(testpeer.Port(e.Addr)))
				if out, err := testpeer.Run(ctx, "storescu", append(args, mine...)...); err != nil {
					errs <- fmt.Errorf("storescu: %v\n%s", err, out)
				}
			})
		}
		wg.Wait()
		d := time.Since(start)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return d
	}
	type row struct {
		name  string
		files []string
		mib   float64
	}
	rows := []row{{name: fmt.Sprintf("%d × 512 KiB", large), files: largeFiles}, {name: fmt.Sprintf("%d × 16 KiB", small), files: smallFiles}}
	for i := range rows {
		for _, f := range rows[i].files {
			st, _ := os.Stat(f)
			rows[i].mib += float64(st.Size()) / (1 << 20)
		}
	}
	fmt.Printf("\nStore-and-forward ingest vs relay: %d storescu +tls senders at once, rounds alternated (%d), medians;\n", senders, rounds)
	fmt.Printf("relay: edge → storescp --ignore; spool: every acknowledged instance fsync'd, named in the queue, its directory fsync'd;\n")
	fmt.Printf("new files: a spool never emptied; spent files: a spool purged before each round, its files reused\n")
	fmt.Printf("%-16s %-34s %9s %10s %9s\n", "instances", "configuration", "seconds", "inst/s", "MiB/s")
	// spoolRound sends files into e and checks that each was spooled: the
	// spool holds len(files) more than before.
	spoolRound := func(e *testEdge, files []string) (d time.Duration, fileSyncs, dirSyncs int64) {
		sp := e.Server.Spool
		n0, _, _ := sp.Counts("pacs")
		f0, d0 := sp.SyncCounts()
		d = send(e, files)
		f1, d1 := sp.SyncCounts()
		if n, _, _ := sp.Counts("pacs"); n-n0 != len(files) {
			t.Fatalf("the spool holds %d more instances after a round of %d", n-n0, len(files))
		}
		return d, f1 - f0, d1 - d0
	}
	purge := func(e *testEdge) {
		if _, err := e.Server.Spool.Purge("", 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rows {
		send(relayEdge, r.files[:senders])
		spoolRound(newEdge, r.files[:senders])
		spoolRound(reuseEdge, r.files) // spent files for the first round
		var relayT, newT, reuseT []time.Duration
		var fileSyncs, dirSyncs int64
		for range rounds {
			relayT = append(relayT, send(relayEdge, r.files))
			d, _, _ := spoolRound(newEdge, r.files)
			newT = append(newT, d)
			purge(reuseEdge)
			d, fileSyncs, dirSyncs = spoolRound(reuseEdge, r.files)
			reuseT = append(reuseT, d)
		}
		purge(reuseEdge)
		n := float64(len(r.files))
		for _, c := range []struct {
			name string
			d    time.Duration
		}{{"relay", median(relayT)}, {"store-and-forward, new files", median(newT)}, {"store-and-forward, spent files", median(reuseT)}} {
			fmt.Printf("%-16s %-34s %9.3f %10.0f %9.1f\n", r.name, c.name, c.d.Seconds(), n/c.d.Seconds(), r.mib/c.d.Seconds())
		}
		for _, c := range []struct {
			name string
			d    []time.Duration
		}{{"new files", newT}, {"spent files", reuseT}} {
			goal := "goal at least 0.80x"
			if r.files[0] == smallFiles[0] {
				goal = fmt.Sprintf("goal at least 1,000 instances/s: %.0f", n/median(c.d).Seconds())
			}
			fmt.Printf("%-74s %6.2fx (%s)\n", "store-and-forward ingest vs relay, "+r.name+", "+c.name, median(relayT).Seconds()/median(c.d).Seconds(), goal)
		}
		fmt.Printf("    last round with spent files: %d file fsyncs, %d directory fsyncs (%.1f instances per directory fsync)\n",
			fileSyncs, dirSyncs, float64(fileSyncs)/float64(max(dirSyncs, 1)))
	}
}
