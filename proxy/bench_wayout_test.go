package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// The way out: plain DICOM in on an inside listener, TLS with the edge's
// client certificate to the backend (storescp +tls --require-peer-cert),
// measured as the way in is (TestRelayBenchmarkReport), against stunnel4 in
// client mode doing the same hop and DCMTK speaking TLS directly.

// Indexes of the way-out report's configurations.
const (
	outTLSDirect = iota
	outStunnel
	outEdge
	outEdgeIn
	outEdgeBefore
)

// wayOutPolicy is the edge's inside listener and the rule that relays
// MODALITY* → CLINA_WS1 on it to the TLS backend at addr.
func wayOutPolicy(inside, addr string, p *testPKI) (listeners, backends, rules string) {
	listeners = fmt.Sprintf(`
listener "inside" {
  listen     = %q
  tls        = false
  allow_cidr = ["127.0.0.1/32"]
}
`, inside)
	backends = fmt.Sprintf(`
backend "ws1" {
  address  = %q
  ae_title = "CLINA_WS1"
  tls {
    ca          = [%q]
    cert_file   = %q
    key_file    = %q
    server_name = "localhost"
  }
}
`, addr, p.ca, p.clientCert, p.clientKey)
	rules = `
rule "out" {
  when {
    listener   = ["inside"]
    calling_ae = ["MODALITY*"]
    called_ae  = ["CLINA_WS1"]
  }
  relay {
    backend  = "ws1"
    services = ["C-ECHO", "C-STORE"]
  }
}
`
	return listeners, backends, rules
}

func startWayOutBench(t testing.TB) []benchTarget {
	t.Helper()
	testpeer.Require(t, "storescu", "storescp", "stunnel4")
	p := sharedPKI(t)
	tlsSCP := testpeer.StartStoreSCP(t, "CLINA_WS1", "--ignore", "+tls", p.edgeKey, p.edgeCert, "+cf", p.ca, "--require-peer-cert")
	plain := testpeer.StartStoreSCP(t, "STORESCP", "--ignore")
	inside := testpeer.FreeAddr(t)
	l, b, r := wayOutPolicy(inside, tlsSCP.Addr, p)
	out := startEdge(t, edgeOptions{Listeners: l, Backends: b, Rules: r, Quiet: true})
	in := startEdge(t, edgeOptions{Backends: backendBlock("pacs", plain.Addr, "STORESCP"), Rules: storeRules(`"C-ECHO", "C-STORE"`), Quiet: true})
	l2, b2, r2 := wayOutPolicy(testpeer.FreeAddr(t), tlsSCP.Addr, p)
	before := startEdge(t, edgeOptions{Listeners: l2, Backends: b2, Rules: r2, Quiet: true, BeforeSpeedUps: true})
	tun := testpeer.StartStunnelClient(t, tlsSCP.Addr, p.clientCert, p.clientKey, p.ca)
	tlsArgs := []string{"+tls", p.clientKey, p.clientCert, "+cf", p.ca}
	target := func(name, addr string, tls []string, called string, edge bool, procs ...*testpeer.Process) benchTarget {
		return benchTarget{name: name, host: testpeer.Host(addr), port: testpeer.Port(addr), tlsArgs: tls, called: called, edge: edge, procs: procs}
	}
	// In the order of the out* constants.
	return []benchTarget{
		target("DCMTK TLS direct, no hop", tlsSCP.Addr, tlsArgs, "CLINA_WS1", false, tlsSCP.Process),
		target("stunnel4 client (plain in, TLS out)", tun.Accept, nil, "CLINA_WS1", false, tlsSCP.Process, tun.Process),
		target("dicomedge inside (plain in, TLS out)", out.listenerAddr(t, "inside"), nil, "CLINA_WS1", true, tlsSCP.Process),
		target("dicomedge way in (TLS in, plain out)", in.Addr, tlsArgs, "MAINPACS", true, plain.Process),
		target("dicomedge inside, before the speed-ups", before.listenerAddr(t, "inside"), nil, "CLINA_WS1", true, tlsSCP.Process),
	}
}

// TestWayOutBenchmarkReport prints the way-out comparison: every
// configuration in each round, rounds alternated, medians and ratios.
func TestWayOutBenchmarkReport(t *testing.T) {
	benchEnabled(t)
	rounds := benchRounds()
	files, total := reportFiles(t)
	targets := startWayOutBench(t)
	times := make([][]time.Duration, len(targets))
	cpu := make([][]time.Duration, len(targets))
	chain := make([][]time.Duration, len(targets))
	for _, bt := range targets {
		_, _ = bt.store(t, files[:10])
	}
	// Profiles (when asked for) come from a pass of their own, so that
	// their cost is in none of the figures.
	if os.Getenv("DICOMEDGE_CPUPROFILE") != "" || os.Getenv("DICOMEDGE_TRACE") != "" {
		for i, bt := range targets {
			if !bt.edge {
				continue
			}
			stop := cpuProfile(t, true, fmt.Sprintf("wayout-%d.cpu", i))
			stopTrace := traceProfiles(t, true, fmt.Sprintf("wayout-%d", i))
			_, _ = bt.store(t, files)
			stopTrace()
			stop()
		}
	}
	for r := 0; r < rounds; r++ {
		for i, bt := range targets {
			before := processCPU()
			wall, chainCPU := bt.store(t, files)
			times[i] = append(times[i], wall)
			chain[i] = append(chain[i], chainCPU)
			cpu[i] = append(cpu[i], processCPU()-before)
		}
	}
	med := make([]time.Duration, len(times))
	for i, ts := range times {
		med[i] = median(ts)
	}
	mib := float64(total) / (1 << 20)
	fmt.Printf("\nWay out: C-STORE of %d instances × 512 KiB (%.1f MiB), storescu → storescp --ignore (+tls --require-peer-cert), %d rounds alternated, medians\n",
		len(files), mib, rounds)
	fmt.Printf("%-40s %9s %9s %12s %14s %11s %12s\n", "configuration", "seconds", "MiB/s", "vs stunnel4", "vs TLS direct", "edge CPU s", "chain CPU s")
	for i, bt := range targets {
		sec := med[i].Seconds()
		edgeCPU := "-"
		if bt.edge {
			edgeCPU = fmt.Sprintf("%.3f", median(cpu[i]).Seconds())
		}
		fmt.Printf("%-40s %9.3f %9.1f %11.2fx %13.2fx %11s %12.3f\n", bt.name, sec, mib/sec,
			sec/med[outStunnel].Seconds(), sec/med[outTLSDirect].Seconds(), edgeCPU, median(chain[i]).Seconds())
	}
	printRatioRows(times, cpu, chain, func(i int) bool { return targets[i].edge }, []ratioRow{
		{"edge way out vs stunnel4 client doing the same hop (goal 0.80)", outEdge, outStunnel},
		{"edge way out vs DCMTK speaking TLS directly (goal 1.25)", outEdge, outTLSDirect},
		{"edge way out vs edge way in", outEdge, outEdgeIn},
		{"edge way out vs the same before the speed-ups", outEdge, outEdgeBefore},
	})
	fmt.Printf("(wall: ratio of median times; wall/round: median of the per-round ratios; chain CPU: user+system time of\n"+
		" storescu, every hop and storescp (this process for the edges), medians; load average at the end: %s)\n", loadAvg())
}

// traceProfiles, when DICOMEDGE_TRACE names a directory and on is true,
// records an execution trace (the scheduler's view: what ran, what waited
// on the network, on a lock, on a channel) and the block profile of this
// process (the edges) into that directory as name.trace and name.block
// until the returned function is called.
func traceProfiles(t testing.TB, on bool, name string) func() {
	dir := os.Getenv("DICOMEDGE_TRACE")
	if !on || dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".trace"))
	if err != nil {
		t.Fatal(err)
	}
	if err := trace.Start(f); err != nil {
		t.Fatal(err)
	}
	runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	var once sync.Once
	return func() {
		once.Do(func() {
			trace.Stop()
			f.Close()
			runtime.SetBlockProfileRate(0)
			if bf, err := os.Create(filepath.Join(dir, name+".block")); err == nil {
				_ = pprof.Lookup("block").WriteTo(bf, 0)
				bf.Close()
			}
			fmt.Printf("  trace and block profile: %s.{trace,block}\n", filepath.Join(dir, name))
		})
	}
}

// TestWayOutRateReport prints the rate of short outbound associations
// (connect, A-ASSOCIATE-RQ/AC, C-ECHO, A-RELEASE from a plain client to the
// edge's inside listener; TLS with the edge's client certificate to
// storescp +tls --require-peer-cert), with a full TLS handshake for every
// association and with the session kept per backend resumed, beside
// stunnel4 in client mode; rounds alternated, medians. storescp serves one
// association at a time, so its handshakes are in every figure; the edge's
// CPU per association is the edge's own cost.
func TestWayOutRateReport(t *testing.T) {
	benchEnabled(t)
	testpeer.Require(t, "storescp", "stunnel4")
	p := sharedPKI(t)
	rounds := benchRounds()
	dur := "5s"
	if benchQuick() {
		dur = "2s"
	}
	scp := testpeer.StartStoreSCP(t, "CLINA_WS1", "--ignore", "+tls", p.edgeKey, p.edgeCert, "+cf", p.ca, "--require-peer-cert")
	edge := func(sessions, before bool) *testEdge {
		l, b, r := wayOutPolicy(testpeer.FreeAddr(t), scp.Addr, p)
		e := startEdge(t, edgeOptions{Listeners: l, Backends: b, Rules: r, Quiet: true, BeforeSpeedUps: before})
		e.Server.bench.backendSessionsOff.Store(!sessions)
		return e
	}
	full, resumed, before := edge(false, false), edge(true, false), edge(false, true)
	tun := testpeer.StartStunnelClient(t, scp.Addr, p.clientCert, p.clientKey, p.ca)
	type config struct {
		name  string
		e     *testEdge
		addr  string
		runs  []float64
		per   []time.Duration // edge CPU per association
		res   []float64       // share of backend handshakes resumed
		errs  int64
		first string
	}
	configs := []*config{
		{name: "dicomedge inside, full TLS handshake each", e: full, addr: full.listenerAddr(t, "inside")},
		{name: "dicomedge inside, session resumed per backend", e: resumed, addr: resumed.listenerAddr(t, "inside")},
		{name: "stunnel4 client", addr: tun.Accept},
		{name: "dicomedge inside, before the speed-ups", e: before, addr: before.listenerAddr(t, "inside")},
	}
	args := func(c *config, d string) []string {
		return []string{"--plain", "--addr", c.addr, "--called", "CLINA_WS1", "--calling", "MODALITY1", "--workers", "4", "--duration", d}
	}
	handshakes := func(e *testEdge) (float64, float64) {
		m := e.Server.Metrics.BackendHandshakes
		return testutil.ToFloat64(m.WithLabelValues("ws1", "false")), testutil.ToFloat64(m.WithLabelValues("ws1", "true"))
	}
	for _, c := range configs {
		_, _ = runRate(t, args(c, "300ms")...)
	}
	// Profiles (when asked for) from a pass of their own.
	for i, c := range configs {
		if c.e == nil || os.Getenv("DICOMEDGE_CPUPROFILE") == "" && os.Getenv("DICOMEDGE_TRACE") == "" {
			continue
		}
		stop := cpuProfile(t, true, fmt.Sprintf("wayout-rate-%d.cpu", i))
		stopTrace := traceProfiles(t, true, fmt.Sprintf("wayout-rate-%d", i))
		_, _ = runRate(t, args(c, "2s")...)
		stopTrace()
		stop()
	}
	for r := 0; r < rounds; r++ {
		for _, c := range configs {
			before := processCPU()
			var f0, r0 float64
			if c.e != nil {
				f0, r0 = handshakes(c.e)
			}
			res, _ := runRate(t, args(c, dur)...)
			c.runs = append(c.runs, res.PerSecond)
			c.errs += res.Errors
			if res.FirstError != "" && c.first == "" {
				c.first = res.FirstError
			}
			if c.e != nil {
				c.per = append(c.per, (processCPU()-before)/time.Duration(max(res.Associations, 1)))
				f1, r1 := handshakes(c.e)
				c.res = append(c.res, (r1-r0)/max(f1-f0+r1-r0, 1))
			}
		}
	}
	fmt.Printf("\nWay out, association rate: plain client (cmd/dicomedge-load, 4 workers) → A-ASSOCIATE, C-ECHO, A-RELEASE →\n"+
		"TLS to storescp +tls --require-peer-cert (one association at a time), %s per run, %d rounds alternated, medians\n", dur, rounds)
	fmt.Printf("%-48s %9s %9s %16s %8s\n", "configuration", "assoc/s", "resumed", "edge CPU/assoc", "errors")
	rate := make([]float64, len(configs))
	for i, c := range configs {
		rate[i] = median(c.runs)
		resumed, per := "-", "-"
		if c.e != nil {
			resumed = fmt.Sprintf("%.0f%%", 100*median(c.res))
			per = fmt.Sprintf("%.3f ms", float64(median(c.per).Microseconds())/1000)
		}
		fmt.Printf("%-48s %9.0f %9s %16s %8d\n", c.name, rate[i], resumed, per, c.errs)
		if c.first != "" {
			fmt.Printf("    first error: %s\n", c.first)
		}
	}
	fmt.Printf("resumed vs full handshakes: %.2fx the rate, %.2fx the edge CPU per association; edge resumed vs stunnel4: %.2fx;\n"+
		"full handshakes after vs before the speed-ups (key share in the group the backend chose, loggers): %.2fx the rate, %.2fx the edge CPU\n"+
		"per association; resumed vs before: %.2fx the rate, %.2fx the CPU (load average at the end: %s)\n",
		rate[1]/rate[0], float64(median(configs[1].per))/float64(median(configs[0].per)), rate[1]/rate[2],
		rate[0]/rate[3], float64(median(configs[0].per))/float64(median(configs[3].per)),
		rate[1]/rate[3], float64(median(configs[1].per))/float64(median(configs[3].per)), loadAvg())
}
