package proxy

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/internal/loadclient"
	"github.com/dicomedge/dicomedge/internal/testpeer"
	"github.com/dicomedge/dicomedge/tlslayer"
)

// Benchmarks. The Go benchmarks (go test -bench) report one configuration
// each; the *Report tests (DICOMEDGE_BENCH=1, run by scripts/bench) run every
// configuration and its baselines alternately in one process and print them
// side by side as medians and ratios, which is how README "Performance"
// states them. DICOMEDGE_BENCH_QUICK=1 makes every report small enough for a
// sanity pass.

var (
	benchFilesOnce sync.Once
	benchFiles     []string
	benchBytes     int64
	benchDir       string
)

func benchEnabled(t *testing.T) {
	t.Helper()
	if os.Getenv("DICOMEDGE_BENCH") == "" {
		t.Skip("set DICOMEDGE_BENCH=1 (scripts/bench) to run the benchmark reports")
	}
}

func benchQuick() bool { return os.Getenv("DICOMEDGE_BENCH_QUICK") != "" }

func benchRounds() int {
	if v, err := strconv.Atoi(os.Getenv("DICOMEDGE_BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	if benchQuick() {
		return 1
	}
	return 3
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	s := append([]T(nil), xs...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	return s[len(s)/2]
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

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

// reportFiles are the 512 KiB instances a relay report stores: 200, or 40
// with --quick, and their bytes.
func reportFiles(t testing.TB) ([]string, int64) {
	n := 200
	if benchQuick() {
		n = 40
	}
	files, total := storeFiles(t, 200)
	return files[:n], total * int64(n) / 200
}

// benchTarget is one way for storescu to reach a storescp.
type benchTarget struct {
	name    string
	host    string
	port    int
	tlsArgs []string
	called  string
	procs   []*testpeer.Process // the long-running processes of its chain (storescp, stunnel4, HAProxy)
	edge    bool                // an edge in this process is in the chain
}

// Indexes of the relay report's configurations.
const (
	relPlain = iota
	relStunnel
	relEdge
	relEdgeNoAudit
	relTLSDirect
	relHAProxyPP
	relHAProxy
)

func hasEdge(i int) bool {
	return i == relEdge || i == relEdgeNoAudit || i == relHAProxyPP || i == relHAProxy
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
	scp, tlsProc := plain.Process, tlsSCP.Process
	rules := storeRules(`"C-ECHO", "C-STORE"`)
	backend := backendBlock("pacs", plain.Addr, "STORESCP")
	edge := startEdge(t, edgeOptions{Backends: backend, Rules: rules, Quiet: true})
	edgeNoAudit := startEdge(t, edgeOptions{Backends: backend, Rules: rules, Quiet: true, NoAudit: true})
	edgePP := startEdge(t, edgeOptions{Backends: backend, Rules: rules, Quiet: true, ProxyProtocol: []string{"127.0.0.1/32"}})
	edgeBehind := startEdge(t, edgeOptions{Backends: backend, Rules: rules, Quiet: true})
	tun := testpeer.StartStunnelServer(t, plain.Addr, p.edgeCert, p.edgeKey, p.ca)
	hap, fronts := testpeer.StartHAProxy(t, testpeer.HAProxyRoute{Server: edgePP.Addr, SendProxyV2: true},
		testpeer.HAProxyRoute{Server: edgeBehind.Addr})
	tlsArgs := []string{"+tls", p.clientKey, p.clientCert, "+cf", p.ca}
	s := &benchSetup{}
	add := func(name, addr string, tls bool, called string, edge bool, procs ...*testpeer.Process) {
		bt := benchTarget{name: name, host: testpeer.Host(addr), port: testpeer.Port(addr), called: called, edge: edge, procs: procs}
		if tls {
			bt.tlsArgs = tlsArgs
		}
		s.targets = append(s.targets, bt)
	}
	// In the order of the rel* constants.
	add("plain DCMTK→DCMTK, no TLS", plain.Addr, false, "STORESCP", false, scp)
	add("stunnel4 (TLS in, plain out)", tun.Accept, true, "STORESCP", false, scp, tun.Process)
	add("dicomedge (TLS in, plain out)", edge.Addr, true, "MAINPACS", true, scp)
	add("dicomedge, audit off", edgeNoAudit.Addr, true, "MAINPACS", true, scp)
	add("DCMTK TLS direct, no hop", tlsSCP.Addr, true, "STORESCP", false, tlsProc)
	add("HAProxy send-proxy-v2 → dicomedge", fronts[0], true, "MAINPACS", true, scp, hap)
	add("HAProxy → dicomedge, no PROXY", fronts[1], true, "MAINPACS", true, scp, hap)
	return s
}

// store runs one storescu of every file and returns its wall time and the
// CPU time of the whole chain: storescu, the processes between it and
// storescp and storescp itself, and this process when an edge is in the
// chain. On a shared machine the CPU time is the steadier figure: waiting
// for a core inflates the wall time of every hop.
func (bt benchTarget) store(t testing.TB, files []string) (time.Duration, time.Duration) {
	t.Helper()
	ctx := testpeer.Context(t, 10*time.Minute)
	args := append(append([]string{}, bt.tlsArgs...), "-aet", "MODALITY1", "-aec", bt.called, bt.host, strconv.Itoa(bt.port))
	args = append(args, files...)
	var before time.Duration
	for _, p := range bt.procs {
		before += p.CPU()
	}
	self := processCPU()
	start := time.Now()
	out, cpu, err := testpeer.RunCPU(ctx, "storescu", args...)
	d := time.Since(start)
	if err != nil {
		t.Fatalf("%s: storescu: %v\n%s", bt.name, err, out)
	}
	if bt.edge {
		cpu += processCPU() - self
	}
	for _, p := range bt.procs {
		cpu += p.CPU()
	}
	return d, cpu - before
}

func BenchmarkStoreRelay(b *testing.B) {
	files, total := storeFiles(b, 200)
	s := startBenchSetup(b)
	for _, bt := range s.targets {
		b.Run(bt.name, func(b *testing.B) {
			b.SetBytes(total)
			for i := 0; i < b.N; i++ {
				_, _ = bt.store(b, files)
			}
		})
	}
}

// TestRelayBenchmarkReport prints the relay comparison: every configuration
// in each round, rounds alternated, medians and ratios.
func TestRelayBenchmarkReport(t *testing.T) {
	benchEnabled(t)
	rounds := benchRounds()
	files, total := reportFiles(t)
	s := startBenchSetup(t)
	times := make([][]time.Duration, len(s.targets))
	cpu := make([][]time.Duration, len(s.targets))   // this process's CPU: the in-process edges
	chain := make([][]time.Duration, len(s.targets)) // CPU of every process in the chain
	for _, bt := range s.targets {
		_, _ = bt.store(t, files[:10]) // warm up the page cache and every peer
	}
	// Alternate configurations so that load from elsewhere hits all alike.
	for r := 0; r < rounds; r++ {
		for i, bt := range s.targets {
			stop := cpuProfile(t, r == 0 && (i == relEdge || i == relHAProxyPP), fmt.Sprintf("relay-%d.cpu", i))
			defer stop()
			stopTrace := traceProfiles(t, r == 0 && i == relEdge, fmt.Sprintf("relay-%d", i))
			before := processCPU()
			wall, chainCPU := bt.store(t, files)
			times[i] = append(times[i], wall)
			chain[i] = append(chain[i], chainCPU)
			cpu[i] = append(cpu[i], processCPU()-before)
			stopTrace()
			stop()
		}
	}
	med := make([]time.Duration, len(times))
	for i, ts := range times {
		med[i] = median(ts)
	}
	mib := float64(total) / (1 << 20)
	fmt.Printf("\nRelay: C-STORE of %d instances × 512 KiB (%.1f MiB), storescu → storescp --ignore, %d rounds alternated, medians\n",
		len(files), mib, rounds)
	fmt.Printf("%-36s %9s %9s %10s %12s %14s %11s %12s\n", "configuration", "seconds", "MiB/s", "vs plain", "vs stunnel4", "vs TLS direct", "edge CPU s", "chain CPU s")
	for i, bt := range s.targets {
		sec := med[i].Seconds()
		edgeCPU := "-"
		if bt.edge {
			edgeCPU = fmt.Sprintf("%.3f", median(cpu[i]).Seconds())
		}
		fmt.Printf("%-36s %9.3f %9.1f %9.2fx %11.2fx %13.2fx %11s %12.3f\n", bt.name, sec, mib/sec,
			sec/med[relPlain].Seconds(), sec/med[relStunnel].Seconds(), sec/med[relTLSDirect].Seconds(), edgeCPU, median(chain[i]).Seconds())
	}
	printRatioRows(times, cpu, chain, hasEdge, []ratioRow{
		{"edge relay vs DCMTK speaking TLS directly", relEdge, relTLSDirect},
		{"edge relay vs stunnel4 doing the same hop", relEdge, relStunnel},
		{"edge relay vs plain DCMTK, no TLS", relEdge, relPlain},
		{"HAProxy send-proxy-v2 → edge vs HAProxy → edge without PROXY", relHAProxyPP, relHAProxy},
		{"edge audit on vs audit off", relEdge, relEdgeNoAudit},
	})
	fmt.Printf("(wall: ratio of median times; wall/round: median of the per-round ratios; chain CPU: user+system time of\n"+
		" storescu, every hop and storescp (this process for the edges), medians; load average at the end: %s)\n", loadAvg())
	setupReport(t)
}

// ratioRow compares configuration a with baseline b of a report.
type ratioRow struct {
	name string
	a, b int
}

// printRatioRows prints each row's ratios from one report's samples per
// configuration (wall times, this process's CPU, the chain's CPU): of the
// median times, and the median of the per-round ratios, which compares
// runs made seconds apart and so is less exposed to load that comes and
// goes; where both sides run an edge (edge(i)), the ratio of its CPU time,
// the steadier comparison on a shared machine.
func printRatioRows(times, cpu, chain [][]time.Duration, edge func(int) bool, rows []ratioRow) {
	fmt.Printf("%-62s %10s %12s %10s %10s\n", "row (time / baseline time; below 1.00x is faster)", "wall", "wall/round", "chain CPU", "edge CPU")
	for _, row := range rows {
		var rs []float64
		for r := range times[row.a] {
			rs = append(rs, times[row.a][r].Seconds()/times[row.b][r].Seconds())
		}
		wall := median(times[row.a]).Seconds() / median(times[row.b]).Seconds()
		edgeCPU := "-"
		if edge(row.a) && edge(row.b) {
			edgeCPU = fmt.Sprintf("%.2fx", median(cpu[row.a]).Seconds()/median(cpu[row.b]).Seconds())
		}
		chainRatio := median(chain[row.a]).Seconds() / median(chain[row.b]).Seconds()
		fmt.Printf("%-62s %9.2fx %11.2fx %9.2fx %10s\n", row.name, wall, median(rs), chainRatio, edgeCPU)
	}
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
	n := 200
	if benchQuick() {
		n = 40
	}
	tlsDial := func() (net.Conn, error) { return e.goClient(t, e.pki.clientCert, e.pki.clientKey), nil }
	plainDial := func() (net.Conn, error) { return net.Dial("tcp", scp.Addr) }
	direct := setupLatency(t, n, plainDial, "STORESCP")
	answer := setupLatency(t, n, tlsDial, "DICOMEDGE")
	relayed := setupLatency(t, n, tlsDial, "MAINPACS")
	pct := func(s []time.Duration, p int) time.Duration { return s[len(s)*p/100] }
	fmt.Printf("\nAssociation set-up (TCP connect [+ TLS handshake] + A-ASSOCIATE-RQ → AC), %d each, one Go client on loopback\n", n)
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

// memDelta is heap allocation by this process (the edges) per association.
type memDelta struct{ allocs, bytes float64 }

type allocSample struct{ mallocs, bytes uint64 }

func allocsNow() allocSample {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return allocSample{m.Mallocs, m.TotalAlloc}
}

func (a allocSample) since(b allocSample, n int64) memDelta {
	n = max(n, 1)
	return memDelta{float64(a.mallocs-b.mallocs) / float64(n), float64(a.bytes-b.bytes) / float64(n)}
}

// cpuProfile, when DICOMEDGE_CPUPROFILE names a directory and on is true,
// profiles this process (the edges) into that directory until the returned
// function is called (at most once takes effect).
func cpuProfile(t testing.TB, on bool, name string) func() {
	dir := os.Getenv("DICOMEDGE_CPUPROFILE")
	if !on || dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
			fmt.Printf("  cpu profile: %s\n", f.Name())
			// The allocations since the process started, beside it.
			if af, err := os.Create(f.Name() + ".allocs"); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(af, 0)
				af.Close()
				fmt.Printf("  allocation profile: %s\n", af.Name())
			}
		})
	}
}

var (
	loadBinOnce sync.Once
	loadBin     string
	loadBinErr  error
)

// loadClient is the path of cmd/dicomedge-load: DICOMEDGE_LOAD if set
// (scripts/bench builds it once), else built into the bench directory.
func loadClient(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("DICOMEDGE_LOAD"); p != "" {
		return p
	}
	loadBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dicomedge-load-")
		if err != nil {
			loadBinErr = err
			return
		}
		loadBin = filepath.Join(dir, "dicomedge-load")
		out, err := exec.Command("go", "build", "-o", loadBin, "github.com/dicomedge/dicomedge/cmd/dicomedge-load").CombinedOutput()
		if err != nil {
			loadBinErr = fmt.Errorf("go build dicomedge-load: %v\n%s", err, out)
		}
	})
	if loadBinErr != nil {
		t.Fatal(loadBinErr)
	}
	return loadBin
}

// runRate runs the load client's rate command in its own process (so that
// its CPU is not this process's) and returns what it measured and the CPU
// time the load client used.
func runRate(t testing.TB, args ...string) (loadclient.RateResult, time.Duration) {
	t.Helper()
	ctx := testpeer.Context(t, 5*time.Minute)
	cmd := exec.CommandContext(ctx, loadClient(t), append([]string{"rate"}, args...)...)
	cmd.Env = testpeer.Env()
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("dicomedge-load rate %q: %v\n%s%s", args, err, out, stderr)
	}
	var res loadclient.RateResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("dicomedge-load rate output %q: %v", out, err)
	}
	return res, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// startBareTLS serves TLS handshakes on a loopback port with the edge's
// certificate and the default profile's versions and groups (curves, when
// not nil, instead), asking for a client certificate as the edge does, and
// closes each connection once its handshake is done.
func startBareTLS(t *testing.T, p *testPKI, curves []tls.CurveID) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.edgeCert, p.edgeKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tlslayer.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates, cfg.ClientAuth = []tls.Certificate{cert}, tls.RequireAnyClientCert
	if curves != nil {
		cfg.CurvePreferences = curves
	}
	return handshakeOnlyBackend(t, cfg)
}

// TestAssociationRateReport prints full mutual-TLS associations per second
// on the edge's answer path, with and without TLS session resumption, next
// to Orthanc's own DICOM TLS and stunnel4 in front of Orthanc, rounds
// alternated, from cmd/dicomedge-load with 8 workers on the same CPUs.
func TestAssociationRateReport(t *testing.T) {
	benchEnabled(t)
	testpeer.Require(t, "stunnel4")
	p := sharedPKI(t)
	rounds := benchRounds()
	dur := "5s"
	if benchQuick() {
		dur = "2s"
	}
	e := startEdge(t, edgeOptions{Quiet: true, MaxAssociations: 256})
	// The same edge without the chain cache and with loggers built as
	// fields come (BeforeSpeedUps): before and after from one run.
	before := startEdge(t, edgeOptions{Quiet: true, MaxAssociations: 256, BeforeSpeedUps: true})
	orthancTLS := testpeer.StartOrthancTLS(t, "ORTHANC", p.edgeCert, p.edgeKey, p.ca)
	orthanc := testpeer.StartOrthanc(t, "ORTHANC", nil)
	tun := testpeer.StartStunnelServer(t, orthanc.DICOM, p.edgeCert, p.edgeKey, p.ca)
	// The floor under the edge's figure: crypto/tls alone, in this process,
	// with the edge's certificate, protocol versions and groups, doing the
	// handshake and nothing else (the client's certificate only parsed and
	// its signature checked, no chain built: the edge caches that).
	bare := startBareTLS(t, p, nil)
	bareX25519 := startBareTLS(t, p, []tls.CurveID{tls.X25519})
	id := []string{"--cert", p.clientCert, "--key", p.clientKey, "--ca", p.ca, "--workers", "8", "--duration", dur, "--calling", "MODALITY1"}
	type config struct {
		name  string
		edge  bool
		args  []string
		runs  []loadclient.RateResult
		edgeC []time.Duration
		loadC []time.Duration
		alloc []memDelta
	}
	configs := []*config{
		{name: "dicomedge answers, full handshakes", edge: true, args: []string{"--addr", e.Addr, "--called", "DICOMEDGE"}},
		{name: "dicomedge answers, TLS 1.3 resumption offered", edge: true, args: []string{"--addr", e.Addr, "--called", "DICOMEDGE", "--resume"}},
		{name: "dicomedge answers, full, before the speed-ups", edge: true, args: []string{"--addr", before.Addr, "--called", "DICOMEDGE"}},
		{name: "crypto/tls handshake alone, same groups", edge: true, args: []string{"--addr", bare, "--handshake-only"}},
		{name: "crypto/tls handshake alone, X25519 only", edge: true, args: []string{"--addr", bareX25519, "--handshake-only"}},
		{name: "Orthanc 1.10 DICOM TLS", args: []string{"--addr", orthancTLS.DICOM, "--called", "ORTHANC", "--allow-tls12"}},
		{name: "stunnel4 → Orthanc plain", args: []string{"--addr", tun.Accept, "--called", "ORTHANC", "--allow-tls12"}},
	}
	for _, c := range configs { // warm up
		_, _ = runRate(t, append(append([]string{}, id...), append(c.args, "--duration", "300ms")...)...)
	}
	for r := 0; r < rounds; r++ {
		for i, c := range configs {
			stop := cpuProfile(t, r == 0 && c.edge, fmt.Sprintf("rate-%d.cpu", i))
			before, m := processCPU(), allocsNow()
			res, loadCPU := runRate(t, append(append([]string{}, id...), c.args...)...)
			c.runs = append(c.runs, res)
			c.loadC = append(c.loadC, loadCPU)
			c.edgeC = append(c.edgeC, processCPU()-before)
			c.alloc = append(c.alloc, allocsNow().since(m, res.Associations))
			stop()
		}
	}
	fmt.Printf("\nAssociations per second: connect, TLS (ECDSA P-256 client certificate), A-ASSOCIATE-RQ/AC, C-ECHO, A-RELEASE;\n"+
		"cmd/dicomedge-load with 8 workers on the same CPUs, %s per run, %d rounds alternated, medians; edge audit on\n", dur, rounds)
	fmt.Printf("%-46s %9s %8s %7s %8s %11s %13s %12s %11s %15s\n", "configuration", "assoc/s", "resumed", "errors", "TLS", "edge CPU/s", "client CPU/s", "allocs/assoc", "KiB/assoc", "edge CPU/assoc")
	rate := make([]float64, len(configs))
	for i, c := range configs {
		var ps []float64
		var resumed, total, errs int64
		for _, r := range c.runs {
			ps = append(ps, r.PerSecond)
			resumed += r.Resumed
			total += r.Associations
			errs += r.Errors
		}
		rate[i] = median(ps)
		cpuPer, allocs, kib, perAssoc := "-", "-", "-", "-"
		if c.edge {
			// The edge's CPU per association: each round's CPU over its
			// associations, the median of the rounds.
			var ms []float64
			for r, run := range c.runs {
				ms = append(ms, c.edgeC[r].Seconds()*1000/float64(max(run.Associations, 1)))
			}
			perAssoc = fmt.Sprintf("%.3f ms", median(ms))
			cpuPer = fmt.Sprintf("%.2f", median(c.edgeC).Seconds()/c.runs[0].Elapsed.Seconds())
			var n, b []float64
			for _, a := range c.alloc {
				n, b = append(n, a.allocs), append(b, a.bytes/1024)
			}
			allocs, kib = fmt.Sprintf("%.0f", median(n)), fmt.Sprintf("%.1f", median(b))
		}
		fmt.Printf("%-46s %9.0f %7.0f%% %7d %8s %11s %13.2f %12s %11s %15s\n", c.name, rate[i], 100*float64(resumed)/float64(max(total, 1)), errs,
			c.runs[0].TLSVersion, cpuPer, median(c.loadC).Seconds()/c.runs[0].Elapsed.Seconds(), allocs, kib, perAssoc)
		if errs > 0 {
			fmt.Printf("    first error: %s\n", c.runs[0].FirstError)
		}
	}
	perAssoc := func(c *config) float64 {
		var ms []float64
		for r, run := range c.runs {
			ms = append(ms, c.edgeC[r].Seconds()*1000/float64(max(run.Associations, 1)))
		}
		return median(ms)
	}
	fmt.Printf("edge full handshakes vs Orthanc DICOM TLS: %.2fx; resumption vs full: %.2fx; edge CPU per full-handshake association\n"+
		"after vs before the speed-ups (chain cache, loggers built when used): %.3f ms vs %.3f ms, %.2fx;\n"+
		"of which crypto/tls's handshake alone (same certificates and groups, nothing else): %.3f ms, with X25519 instead of\n"+
		"X25519MLKEM768: %.3f ms (load average at the end: %s)\n",
		rate[0]/rate[5], rate[1]/rate[0], perAssoc(configs[0]), perAssoc(configs[2]), perAssoc(configs[0])/perAssoc(configs[2]),
		perAssoc(configs[3]), perAssoc(configs[4]), loadAvg())
}
