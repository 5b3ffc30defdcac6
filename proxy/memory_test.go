package proxy

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// holdPDU is the size of the one P-DATA-TF each relayed association sends
// before it goes idle (the edge accepts PDUs up to 1 MiB).
const holdPDU = 256 << 10

// memSample is this process's memory: RSS as the kernel counts it, and the
// Go heap and stacks in use, after returning what the GC can.
type memSample struct {
	rss, heap, stacks uint64
	goroutines        int
}

func memNow() memSample {
	// Each GC halves the stack of a parked goroutine that uses under a
	// quarter of it; a long-running edge collects at least every two
	// minutes, so an association idle for a few minutes has its stacks at
	// their floor. Four collections get there from the handshake's depth.
	for range 4 {
		runtime.GC()
	}
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{rss: rssNow(), heap: m.HeapInuse, stacks: m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// rssNow is VmRSS from /proc/self/status in bytes (0 where there is none).
func rssNow() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestIdleMemoryReport prints the edge's memory per idle association:
// answered by the edge (after A-ASSOCIATE-AC) and relayed (after one C-STORE
// in a 256 KiB PDU), each from Go clients (crypto/tls in cmd/dicomedge-load)
// and OpenSSL clients (cmd/dicomedge-load through a local stunnel4 client,
// so OpenSSL's TLS with its full-size records reaches the edge). The edge
// runs in this process; the clients, stunnel and the backend SCP do not.
func TestIdleMemoryReport(t *testing.T) {
	benchEnabled(t)
	n := 1000
	if benchQuick() {
		n = 200
	}
	fmt.Printf("\nEdge memory per idle TLS association, %d held; RSS growth of the edge's process (Go heap + stacks in brackets)\n", n)
	fmt.Printf("%-58s %9s %14s %12s %11s\n", "association", "RSS KiB", "(heap+stacks)", "(of stacks)", "goroutines")
	for _, relayed := range []bool{false, true} {
		for _, openssl := range []bool{false, true} {
			memoryReportOne(t, n, relayed, openssl)
		}
	}
	fmt.Printf("(load average at the end: %s)\n", loadAvg())
}

func memoryReportOne(t *testing.T, n int, relayed, openssl bool) {
	p := sharedPKI(t)
	o := edgeOptions{Quiet: true, MaxAssociations: n + 10, MaxPerClient: n + 10} // one client holds them all
	backend := ""
	args := []string{"hold", "--n", strconv.Itoa(n), "--calling", "MODALITY1"}
	if relayed {
		backend = testpeer.FreeAddr(t)
		o.Backends, o.Rules = backendBlock("pacs", backend, "STORESCP"), storeRules(`"C-ECHO", "C-STORE"`)
		args = append(args, "--scp", backend, "--store", strconv.Itoa(holdPDU), "--called", "MAINPACS")
	} else {
		args = append(args, "--called", "DICOMEDGE")
	}
	profile := os.Getenv("DICOMEDGE_MEMPROFILE") // a directory: heap profile of the edge per report
	if profile != "" {
		old := runtime.MemProfileRate
		runtime.MemProfileRate = 512
		defer func() { runtime.MemProfileRate = old }()
	}
	e := startEdge(t, o)
	if openssl {
		tun := testpeer.StartStunnelClient(t, e.Addr, p.clientCert, p.clientKey, p.ca)
		args = append(args, "--plain", "--addr", tun.Accept)
	} else {
		args = append(args, "--addr", e.Addr, "--cert", p.clientCert, "--key", p.clientKey, "--ca", p.ca)
	}
	before := memNow()
	cmd := exec.Command(loadClient(t), args...)
	cmd.Env = testpeer.Env()
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr testpeer.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	deadline := time.Now().Add(30 * time.Second)
	for e.Server.active.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := e.Server.active.Load(); got < int64(n) {
		t.Fatalf("only %d of %d associations open; load client: %s", got, n, stderr.String())
	}
	time.Sleep(200 * time.Millisecond) // let the last handshakes' garbage become garbage
	after := memNow()
	what := "answered"
	if relayed {
		what = fmt.Sprintf("relayed, after one %d KiB C-STORE PDU", holdPDU>>10)
	}
	if openssl {
		what += " (OpenSSL clients)"
	} else {
		what += " (Go clients)"
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	fmt.Printf("%-58s %9.1f %14.1f %12.1f %11.1f\n", what, per(after.rss, before.rss),
		per(after.heap+after.stacks, before.heap+before.stacks), per(after.stacks, before.stacks),
		float64(after.goroutines-before.goroutines)/float64(n))
	if profile != "" {
		name := map[bool]string{false: "answered", true: "relayed"}[relayed] + map[bool]string{false: "-go", true: "-openssl"}[openssl]
		f, err := os.Create(filepath.Join(profile, "idle-"+name+".heap"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("  heap profile: %s\n", f.Name())
	}
}
