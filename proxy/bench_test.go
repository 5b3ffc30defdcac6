package proxy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// Relay benchmarks. The Go benchmarks (go test -bench) report one
// configuration each; TestRelayBenchmarkReport (DICOMEDGE_BENCH=1, run by
// scripts/bench) runs every configuration alternately in one process and
// prints them side by side as ratios, which is what the design's targets
// are stated in.

var (
	benchFilesOnce sync.Once
	benchFiles     []string
	benchBytes     int64
	benchDir       string
)

// storeFiles makes n instances of 512 KiB pixel data once per process.
func storeFiles(t testing.TB, n int) ([]string, int64) {
	t.Helper()
	benchFilesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dicomedge-bench-")
		if err != nil {
			t.Fatal(err)
		}
		benchDir = dir
		benchFiles, _ = testpeer.WriteDICOMFiles(&dirTB{TB: t, dir: dir}, filepath.Join(dir, "files"), "BENCH", n, 512, 512)
		for _, f := range benchFiles {
			st, _ := os.Stat(f)
			benchBytes += st.Size()
		}
	})
	return benchFiles, benchBytes
}

// benchTarget is one way for storescu to reach a storescp.
type benchTarget struct {
	name    string
	host    string
	port    int
	tlsArgs []string
	called  string
}

// benchSetup starts the peers of every configuration once.
type benchSetup struct {
	targets []benchTarget
}

func startBenchSetup(t testing.TB) *benchSetup {
	t.Helper()
	testpeer.Require(t, "storescu", "storescp", "stunnel4")
	p := sharedPKI(t)
	// storescp --ignore receives and discards: the disk is not what is measured.
	plain := testpeer.StartStoreSCP(t, "STORESCP", "--ignore")
	tlsSCP := testpeer.StartStoreSCP(t, "STORESCP", "--ignore", "+tls", p.edgeKey, p.edgeCert, "+cf", p.ca)
	rules := storeRules(`"C-ECHO", "C-STORE"`)
	edge := startEdge(t, edgeOptions{Backends: backendBlock("pacs", plain.Addr, "STORESCP"), Rules: rules, Quiet: true})
	edgeNoAudit := startEdge(t, edgeOptions{Backends: backendBlock("pacs", plain.Addr, "STORESCP"), Rules: rules, Quiet: true, NoAudit: true})
	tun := testpeer.StartStunnelServer(t, plain.Addr, p.edgeCert, p.edgeKey, p.ca)
	tlsArgs := []string{"+tls", p.clientKey, p.clientCert, "+cf", p.ca}
	hp := func(addr string) (string, int) { return testpeer.Host(addr), testpeer.Port(addr) }
	s := &benchSetup{}
	add := func(name, addr string, tls bool, called string) {
		h, port := hp(addr)
		bt := benchTarget{name: name, host: h, port: port, called: called}
		if tls {
			bt.tlsArgs = tlsArgs
		}
		s.targets = append(s.targets, bt)
	}
	add("plain DCMTK→DCMTK, no TLS", plain.Addr, false, "STORESCP")
	add("stunnel4 (TLS in, plain out)", tun.Accept, true, "STORESCP")
	add("dicomedge (TLS in, plain out)", edge.Addr, true, "MAINPACS")
	add("dicomedge, audit off", edgeNoAudit.Addr, true, "MAINPACS")
	add("DCMTK TLS direct, no hop", tlsSCP.Addr, true, "STORESCP")
	return s
}

// store runs one storescu of every file and returns its wall time.
func (bt benchTarget) store(t testing.TB, files []string) time.Duration {
	t.Helper()
	ctx := testpeer.Context(t, 10*time.Minute)
	args := append(append([]string{}, bt.tlsArgs...), "-aet", "MODALITY1", "-aec", bt.called, bt.host, strconv.Itoa(bt.port))
	args = append(args, files...)
	start := time.Now()
	out, err := testpeer.Run(ctx, "storescu", args...)
	d := time.Since(start)
	if err != nil {
		t.Fatalf("%s: storescu: %v\n%s", bt.name, err, out)
	}
	return d
}

func BenchmarkStoreRelay(b *testing.B) {
	files, total := storeFiles(b, 200)
	s := startBenchSetup(b)
	for _, bt := range s.targets {
		b.Run(bt.name, func(b *testing.B) {
			b.SetBytes(total)
			for i := 0; i < b.N; i++ {
				bt.store(b, files)
			}
		})
	}
}

// TestRelayBenchmarkReport prints the relay comparison as ratios in one
// run; scripts/bench sets DICOMEDGE_BENCH=1.
func TestRelayBenchmarkReport(t *testing.T) {
	if os.Getenv("DICOMEDGE_BENCH") == "" {
		t.Skip("set DICOMEDGE_BENCH=1 (scripts/bench) to run the relay comparison")
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("DICOMEDGE_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	files, total := storeFiles(t, 200)
	s := startBenchSetup(t)
	times := make([][]time.Duration, len(s.targets))
	cpu := make([][]time.Duration, len(s.targets)) // this process's CPU: the in-process edges
	// Warm up (page cache, TLS session state of nothing: each run is a new process).
	for _, bt := range s.targets {
		bt.store(t, files[:10])
	}
	// Alternate configurations so that load from elsewhere hits all alike.
	for r := 0; r < rounds; r++ {
		for i, bt := range s.targets {
			before := processCPU()
			times[i] = append(times[i], bt.store(t, files))
			cpu[i] = append(cpu[i], processCPU()-before)
		}
	}
	median := func(ts []time.Duration) time.Duration {
		sort.Slice(ts, func(a, b int) bool { return ts[a] < ts[b] })
		return ts[len(ts)/2]
	}
	med := make([]time.Duration, len(times))
	for i, ts := range times {
		med[i] = median(ts)
	}
	mib := float64(total) / (1 << 20)
	fmt.Printf("\nC-STORE of %d instances × 512 KiB (%.1f MiB), storescu → storescp --ignore, median of %d rounds\n",
		len(files), mib, rounds)
	fmt.Printf("%-34s %9s %9s %12s %14s %15s %12s\n", "configuration", "seconds", "MiB/s", "vs plain", "vs stunnel4", "vs TLS direct", "edge CPU s")
	for i, bt := range s.targets {
		sec := med[i].Seconds()
		fmt.Printf("%-34s %9.3f %9.1f %11.2fx %13.2fx %14.2fx %12.3f\n", bt.name, sec, mib/sec,
			sec/med[0].Seconds(), sec/med[1].Seconds(), sec/med[4].Seconds(), median(cpu[i]).Seconds())
	}
	fmt.Printf("(ratios are time / baseline time: below 1.00x is faster than the baseline; edge CPU is user+system\n" +
		" time of this process, which hosts the edges, Go runtime spinning included: near zero for the rows\n" +
		" without the edge; on a loaded machine it varies too, less than wall time)\n")
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("load average at the end: %s", load)
	fmt.Printf("audit on vs off: %.2fx\n", med[2].Seconds()/med[3].Seconds())

	setupReport(t)
}

// setupLatency measures TLS handshake + A-ASSOCIATE-RQ → AC (+ release) n
// times through dial and returns the sorted samples.
func setupLatency(t testing.TB, n int, dial func() (net.Conn, error), called string) []time.Duration {
	t.Helper()
	var out []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		associate(t, c, echoRQ("MODALITY1", called))
		out = append(out, time.Since(start))
		_ = association.WritePDU(c, &association.ReleaseRQ{})
		_, _ = readPDU(t, c, 5*time.Second)
		c.Close()
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

func setupReport(t *testing.T) {
	testpeer.Require(t, "storescp")
	scp := testpeer.StartStoreSCP(t, "STORESCP", "--ignore")
	e := startEdge(t, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO"`), Quiet: true})
	const n = 200
	tlsDial := func() (net.Conn, error) { return e.goClient(t, e.pki.clientCert, e.pki.clientKey), nil }
	plainDial := func() (net.Conn, error) { return net.Dial("tcp", scp.Addr) }
	direct := setupLatency(t, n, plainDial, "STORESCP")
	answer := setupLatency(t, n, tlsDial, "DICOMEDGE")
	relayed := setupLatency(t, n, tlsDial, "MAINPACS")
	pct := func(s []time.Duration, p int) time.Duration { return s[len(s)*p/100] }
	fmt.Printf("\nAssociation set-up (TCP connect [+ TLS handshake] + A-ASSOCIATE-RQ → AC), %d each, Go client on loopback\n", n)
	fmt.Printf("%-44s %10s %10s\n", "path", "median", "p90")
	for _, r := range []struct {
		name string
		s    []time.Duration
	}{{"storescp directly, plain", direct}, {"edge answers (TLS)", answer}, {"edge relays to storescp (TLS in, plain out)", relayed}} {
		fmt.Printf("%-44s %10v %10v\n", r.name, pct(r.s, 50).Round(time.Microsecond), pct(r.s, 90).Round(time.Microsecond))
	}
	fmt.Printf("added by the edge (relay median − direct median): %v\n", (pct(relayed, 50) - pct(direct, 50)).Round(time.Microsecond))
}

func BenchmarkAssociationSetupThroughEdge(b *testing.B) {
	testpeer.Require(b, "storescp")
	scp := testpeer.StartStoreSCP(b, "STORESCP", "--ignore")
	e := startEdge(b, edgeOptions{Backends: backendBlock("pacs", scp.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO"`), Quiet: true})
	dial := func() (net.Conn, error) { return e.goClient(b, e.pki.clientCert, e.pki.clientKey), nil }
	b.ResetTimer()
	s := setupLatency(b, b.N, dial, "MAINPACS")
	b.ReportMetric(float64(s[len(s)/2].Microseconds()), "median-µs")
}
