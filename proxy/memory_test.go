package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/internal/testpeer"
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
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "localhost",
		DynamicRecordSizingDisabled: os.Getenv("DICOMEDGE_HOLD_FULLRECORDS") != ""}
	// Full-size records from the start, as OpenSSL sends them (crypto/tls
	// grows them over the first 128 KiB).
	// Relayed: this process is also the backend, and each association
	// stores one instance in a single large PDU before it goes idle, so
	// that buffers kept after traffic would show.
	relayed := os.Getenv("DICOMEDGE_HOLD_BACKEND") != ""
	if relayed {
		startHoldBackend(t, os.Getenv("DICOMEDGE_HOLD_BACKEND"))
	}
	var conns []*tls.Conn
	for i := 0; i < n; i++ {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("association %d: %v", i, err)
		}
		rq := echoRQ("HOLDER", "DICOMEDGE")
		if relayed {
			rq = storeRQ("MODALITY1", "MAINPACS")
		}
		if err := association.WritePDU(c, rq); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := association.NewReader(c, 1<<20)
		p, err := r.ReadPDU()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := p.(*association.AssociateAC); !ok {
			t.Fatalf("association %d: %T", i, p)
		}
		if relayed {
			holdStore(t, c, r, uint16(i+1))
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

// holdPDU is the size of the one P-DATA-TF each relayed association sends
// before it goes idle (the edge accepts PDUs up to 1 MiB).
const holdPDU = 256 << 10

func storeRQ(calling, called string) *association.AssociateRQ {
	rq := echoRQ(calling, called)
	rq.PresentationContexts = append(rq.PresentationContexts, association.PresentationContextRQ{ID: 3,
		AbstractSyntax: association.SecondaryCaptureImageStorage, TransferSyntaxes: []string{association.ImplicitVRLittleEndian}})
	return rq
}

// holdStore sends one C-STORE whose data set fills one holdPDU-byte PDU
// and waits for the C-STORE-RSP.
func holdStore(t *testing.T, c *tls.Conn, r *association.Reader, id uint16) {
	cmd := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: id, AffectedSOPClassUID: association.SecondaryCaptureImageStorage,
		AffectedSOPInstanceUID: fmt.Sprintf("1.2.826.0.1.3680043.2.1143.%d", id), CommandDataSetType: 0}
	if err := dimse.WriteMessage(c, 3, cmd, make([]byte, holdPDU-12), holdPDU); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := r.ReadPDU()
		if err != nil {
			t.Fatalf("C-STORE %d: %v", id, err)
		}
		if pd, ok := p.(*association.PDataTF); ok && pd.PDVs[len(pd.PDVs)-1].Last {
			return
		}
	}
}

// startHoldBackend is a minimal SCP for the relayed memory report: it
// accepts every proposed context and answers each complete request with
// status 0x0000, for any number of associations at once.
func startHoldBackend(t *testing.T, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go holdBackendConn(nc)
		}
	}()
}

func holdBackendConn(nc net.Conn) {
	defer nc.Close()
	r := association.NewReader(nc, 4<<20)
	p, err := r.ReadPDU()
	if err != nil {
		return
	}
	rq, ok := p.(*association.AssociateRQ)
	if !ok {
		return
	}
	ac := &association.AssociateAC{ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
		ApplicationContext: rq.ApplicationContext,
		UserInfo:           association.UserInfo{MaxLength: 1 << 20, HasMaxLength: true, ImplementationClassUID: "1.2.3.4"}}
	for _, pc := range rq.PresentationContexts {
		ac.PresentationContexts = append(ac.PresentationContexts,
			association.PresentationContextAC{ID: pc.ID, Result: association.PCAcceptance, TransferSyntax: pc.TransferSyntaxes[0]})
	}
	if association.WritePDU(nc, ac) != nil {
		return
	}
	asm := &dimse.Assembler{}
	var req *dimse.Command
	var ctx uint8
	for {
		p, err := r.ReadPDU()
		if err != nil {
			return
		}
		pd, ok := p.(*association.PDataTF)
		if !ok {
			if _, rel := p.(*association.ReleaseRQ); rel {
				_ = association.WritePDU(nc, &association.ReleaseRP{})
			}
			return
		}
		for _, v := range pd.PDVs {
			cmd, done, err := asm.Add(v)
			if err != nil {
				return
			}
			if done {
				req, ctx = cmd, v.ContextID
			}
			if req != nil && (done && !req.HasDataSet() || !v.Command && v.Last) {
				if dimse.WriteMessage(nc, ctx, dimse.NewResponse(req, dimse.StatusSuccess), nil, 16384) != nil {
					return
				}
				req = nil
			}
		}
	}
}

// TestIdleMemoryReport prints the idle-association memory figures;
// scripts/bench sets DICOMEDGE_BENCH=1.
func TestIdleMemoryReport(t *testing.T) {
	if os.Getenv("DICOMEDGE_BENCH") == "" {
		t.Skip("set DICOMEDGE_BENCH=1 (scripts/bench) to measure idle-association memory")
	}
	memoryReport(t, 1000)
}

// memoryReport prints the edge's memory per idle association, answered by
// the edge (after A-ASSOCIATE-AC) and relayed (after one C-STORE in a
// 256 KiB PDU).
func memoryReport(t *testing.T, n int) {
	memoryReportOne(t, n, false, false)
	memoryReportOne(t, n, true, false)
	memoryReportOne(t, n, true, true)
}

// memoryReportOne measures n idle associations; fullRecords makes the
// clients send full-size TLS records from the first byte, as OpenSSL (so
// DCMTK) does, instead of crypto/tls's records that grow over the first
// 128 KiB, which leave tls.Conn's input buffer on the edge twice as large.
func memoryReportOne(t *testing.T, n int, relayed, fullRecords bool) {
	o := edgeOptions{Quiet: true, MaxAssociations: n + 10}
	backend := ""
	if relayed {
		backend = testpeer.FreeAddr(t)
		o.Backends, o.Rules = backendBlock("pacs", backend, "STORESCP"), storeRules(`"C-ECHO", "C-STORE"`)
	}
	profile := os.Getenv("DICOMEDGE_MEMPROFILE") // a directory: heap profile of the edge per report
	if profile != "" {
		old := runtime.MemProfileRate
		runtime.MemProfileRate = 512
		t.Cleanup(func() { runtime.MemProfileRate = old })
	}
	e := startEdge(t, o)
	before, beforeStacks, beforeG := heapNow(), stackNow(), runtime.NumGoroutine()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldAssociations$")
	cmd.Env = append(os.Environ(), "DICOMEDGE_HOLD_ADDR="+e.Addr, "DICOMEDGE_HOLD_N="+strconv.Itoa(n),
		"DICOMEDGE_HOLD_CERT="+e.pki.clientCert, "DICOMEDGE_HOLD_KEY="+e.pki.clientKey, "DICOMEDGE_HOLD_CA="+e.pki.ca,
		"DICOMEDGE_HOLD_BACKEND="+backend, "DICOMEDGE_HOLD_FULLRECORDS="+map[bool]string{true: "1"}[fullRecords])
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
	after, afterStacks, afterG := heapNow(), stackNow(), runtime.NumGoroutine()
	per := float64(after-before) / float64(n)
	what := "answered"
	if relayed {
		what = fmt.Sprintf("relayed (after one %d KiB PDU each)", holdPDU>>10)
		if fullRecords {
			what = fmt.Sprintf("relayed (after one %d KiB PDU each; the client sends full-size TLS records)", holdPDU>>10)
		}
	}
	fmt.Printf("\nIdle %s TLS associations held open: %d; edge heap+stacks grew %.1f MiB = %.1f KiB per association\n",
		what, e.Server.active.Load(), float64(after-before)/(1<<20), per/1024)
	fmt.Printf("  of which goroutine stacks %.1f KiB and %.1f goroutines per association\n",
		float64(afterStacks-beforeStacks)/float64(n)/1024, float64(afterG-beforeG)/float64(n))
	if profile != "" {
		name := "answered"
		if relayed {
			name = "relayed"
		}
		if fullRecords {
			name += "-fullrecords"
		}
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

func stackNow() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}
