package proxy

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// ctImageStorage is CT Image Storage (PS3.4 B.5): an image class without
// the burned-in presumption that Secondary Capture has.
const ctImageStorage = "1.2.840.10008.5.1.4.1.1.2"

// TestDeidentifyBenchmarkReport prints "relay with de-identification vs
// the same relay without": storescu +tls → edge → storescp --ignore, 200 CT
// instances of 512 KiB, the two edges alternated round by round in this
// process, medians of wall time and of the edge's CPU time.
func TestDeidentifyBenchmarkReport(t *testing.T) {
	benchEnabled(t)
	testpeer.Require(t, "storescu", "storescp")
	rounds := benchRounds()
	n := 200
	if benchQuick() {
		n = 40
	}
	dir := t.TempDir()
	files, _ := testpeer.WriteDICOMFilesOf(t, ctImageStorage, filepath.Join(dir, "ct"), "BENCHCT", n, 512, 512)
	var total int64
	for _, f := range files {
		st, _ := os.Stat(f)
		total += st.Size()
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "deid.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	p := sharedPKI(t)
	scp := testpeer.StartStoreSCP(t, "STORESCP", "--ignore")
	backend := backendBlock("pacs", scp.Addr, "STORESCP")
	plain := startEdge(t, edgeOptions{Backends: backend, Rules: storeRules(`"C-ECHO", "C-STORE"`), Quiet: true})
	deidEdge := startEdge(t, edgeOptions{Quiet: true, Backends: backend + fmt.Sprintf(`
deidentify "bench" {
  key_file = %q
}
`, keyFile), Rules: modalityRelayRule(`services = ["C-ECHO", "C-STORE"]
    deidentify = "bench"`)})
	tlsArgs := []string{"+tls", p.clientKey, p.clientCert, "+cf", p.ca}
	targets := []benchTarget{
		{name: "edge relay (TLS in, plain out)", host: plain.host(), port: testpeer.Port(plain.Addr), tlsArgs: tlsArgs, called: "MAINPACS", edge: true, procs: []*testpeer.Process{scp.Process}},
		{name: "edge relay, de-identified (basic profile)", host: deidEdge.host(), port: testpeer.Port(deidEdge.Addr), tlsArgs: tlsArgs, called: "MAINPACS", edge: true, procs: []*testpeer.Process{scp.Process}},
	}
	times := make([][]time.Duration, len(targets))
	cpu := make([][]time.Duration, len(targets))
	for _, bt := range targets {
		_, _ = bt.store(t, files[:10])
	}
	for r := 0; r < rounds; r++ {
		for i, bt := range targets {
			before := processCPU()
			wall, _ := bt.store(t, files)
			times[i] = append(times[i], wall)
			cpu[i] = append(cpu[i], processCPU()-before)
		}
	}
	mib := float64(total) / (1 << 20)
	fmt.Printf("\nDe-identification: C-STORE of %d CT instances × 512 KiB (%.1f MiB), storescu +tls → edge → storescp --ignore, %d rounds alternated, medians\n",
		len(files), mib, rounds)
	fmt.Printf("%-44s %9s %9s %11s\n", "configuration", "seconds", "MiB/s", "edge CPU s")
	for i, bt := range targets {
		sec := median(times[i]).Seconds()
		fmt.Printf("%-44s %9.3f %9.1f %11.3f\n", bt.name, sec, mib/sec, median(cpu[i]).Seconds())
	}
	var rs []float64
	for r := range times[0] {
		rs = append(rs, times[1][r].Seconds()/times[0][r].Seconds())
	}
	fmt.Printf("%-62s %9.2fx (per round %.2fx; edge CPU %.2fx; goal at most 1.10x)\n",
		"relay with de-identification vs the same relay without",
		median(times[1]).Seconds()/median(times[0]).Seconds(), median(rs),
		median(cpu[1]).Seconds()/median(cpu[0]).Seconds())
}
