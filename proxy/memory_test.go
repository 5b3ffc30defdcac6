package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
)

// TestHelperHoldAssociations is not a test: run by memoryReport as a child
// process, it opens DICOMEDGE_HOLD_N answered associations to the edge and
// holds them idle until stdin closes, so that the edge's memory per idle
// association can be measured without the clients' own in the same heap.
func TestHelperHoldAssociations(t *testing.T) {
	addr := os.Getenv("DICOMEDGE_HOLD_ADDR")
	if addr == "" {
		t.Skip("helper process for the idle-association memory report")
	}
	n, _ := strconv.Atoi(os.Getenv("DICOMEDGE_HOLD_N"))
	pair, err := tls.LoadX509KeyPair(os.Getenv("DICOMEDGE_HOLD_CERT"), os.Getenv("DICOMEDGE_HOLD_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(os.Getenv("DICOMEDGE_HOLD_CA"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "localhost"}
	var conns []*tls.Conn
	for i := 0; i < n; i++ {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("association %d: %v", i, err)
		}
		if err := association.WritePDU(c, echoRQ("HOLDER", "DICOMEDGE")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := association.NewReader(c, 1<<20).ReadPDU(); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// memoryReport prints the edge's memory per idle answered association.
func memoryReport(t *testing.T, n int) {
	e := startEdge(t, edgeOptions{Quiet: true, MaxAssociations: n + 10})
	before := heapNow()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldAssociations$")
	cmd.Env = append(os.Environ(), "DICOMEDGE_HOLD_ADDR="+e.Addr, "DICOMEDGE_HOLD_N="+strconv.Itoa(n),
		"DICOMEDGE_HOLD_CERT="+e.pki.clientCert, "DICOMEDGE_HOLD_KEY="+e.pki.clientKey, "DICOMEDGE_HOLD_CA="+e.pki.ca)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.Server.active.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	after := heapNow()
	per := float64(after-before) / float64(n)
	fmt.Printf("\nIdle answered TLS associations held open: %d; edge heap+stacks grew %.1f MiB = %.1f KiB per association\n",
		e.Server.active.Load(), float64(after-before)/(1<<20), per/1024)
}
