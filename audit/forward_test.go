package audit

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// sink is a minimal RFC 5425 receiver (TLS, octet-counting frames) that
// keeps the seq of each JSON message, for tests that need no rsyslog.
type sink struct {
	ln   net.Listener
	mu   sync.Mutex
	seqs []uint64
}

func startSink(t testing.TB) (*sink, *tls.Config) {
	t.Helper()
	pki := testpeer.NewPKI(t, "sink")
	cert, key := pki.Issue(t, "sink", testpeer.CertOptions{CN: "localhost", IPs: []string{"127.0.0.1"}, Server: true})
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s.read(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(pki.CACert)
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("sink CA: %v", err)
	}
	return s, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
}

func (s *sink) read(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		n, err := br.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil || size <= 0 || size > 1<<20 {
			return
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		// <PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG
		parts := strings.SplitN(string(msg), " ", 8)
		var r struct{ Seq uint64 }
		if len(parts) == 8 && json.Unmarshal([]byte(parts[7]), &r) == nil {
			s.mu.Lock()
			s.seqs = append(s.seqs, r.Seq)
			s.mu.Unlock()
		}
	}
}

func (s *sink) got() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.seqs...)
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seqs)
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// The forwarder follows the file across rotations, and after a restart
// continues from its cursor: nothing is sent twice, whatever was rotated
// meanwhile (the rotated files before the cursor are passed over).
func TestForwarderFollowsRotationsFromItsCursor(t *testing.T) {
	s, tc := startSink(t)
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := &SyslogConfig{Address: s.ln.Addr().String(), Format: "json", TLS: tc, Poll: 10 * time.Millisecond,
		ConfirmAfter: 50 * time.Millisecond, CloseTimeout: 20 * time.Second}
	w := openT(t, Config{File: file, RotateSize: 2048, Syslog: cfg})
	for i := range 60 {
		w.Log(Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: i + 1, Detail: strings.Repeat("r", 100)})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(Files(file)); n < 4 {
		t.Fatalf("%d files; want several rotations", n)
	}
	if got := s.got(); fmt.Sprint(got) != fmt.Sprint(seqRange(1, 60)) {
		t.Fatalf("sink holds %v; want 1..60 in order", got)
	}
	w2 := openT(t, Config{File: file, RotateSize: 2048, Syslog: cfg})
	for i := range 10 {
		w2.Log(Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: i + 61})
	}
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.got(); fmt.Sprint(got) != fmt.Sprint(seqRange(1, 70)) {
		t.Fatalf("sink holds %v after the restart; want 1..70 in order, none twice", got)
	}
}

// A cursor that no longer matches the log (the log was replaced by another
// with the same seqs) makes the forwarder send the whole log, not skip it.
func TestForwarderCursorMismatchSendsTheWholeLog(t *testing.T) {
	s, tc := startSink(t)
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	// A cursor for seq 3 with a hash no record has.
	if err := writeCursor(CursorPath(file), cursor{Seq: 3, Hash: strings.Repeat("ab", 32)}); err != nil {
		t.Fatal(err)
	}
	w := openT(t, Config{File: file})
	writeN(t, w, 5)
	w.Close()
	cfg := &SyslogConfig{Address: s.ln.Addr().String(), Format: "json", TLS: tc, Poll: 10 * time.Millisecond,
		ConfirmAfter: 50 * time.Millisecond, CloseTimeout: 20 * time.Second}
	w = openT(t, Config{File: file, Syslog: cfg})
	w.Log(Event{Event: EventPolicyReloaded})
	w.Close()
	if got := s.got(); fmt.Sprint(got) != fmt.Sprint(seqRange(1, 6)) {
		t.Fatalf("sink holds %v; want the whole log 1..6", got)
	}
}

// BenchmarkForwarder measures records forwarded from the audit file to a
// TLS collector per second (JSON, a typical C-STORE record): with the
// default one-second confirmation the InFlight bound (4096) is the limit a
// backlog drains at; with a short one, the forwarder's own speed.
func BenchmarkForwarder(b *testing.B) {
	for _, confirm := range []time.Duration{20 * time.Millisecond, 0} {
		name := "confirm=default"
		if confirm > 0 {
			name = "confirm=" + confirm.String()
		}
		b.Run(name, func(b *testing.B) {
			s, tc := startSink(b)
			file := filepath.Join(b.TempDir(), "audit.jsonl")
			w, err := Open(Config{File: file, Fsync: 100 * time.Millisecond, Syslog: edgeTimings(&SyslogConfig{Address: s.ln.Addr().String(), Format: "json", TLS: tc,
				Poll: 5 * time.Millisecond, ConfirmAfter: confirm, CloseTimeout: time.Minute})})
			if err != nil {
				b.Fatal(err)
			}
			e := Event{Event: EventDIMSE, Service: "C-STORE", SOPClass: "1.2.840.10008.5.1.4.1.1.2", SOPInstance: "1.2.826.0.1.3680043.2.1125.1.123456789",
				StudyUID: "1.2.826.0.1.3680043.2.1125.1.1", CallingAE: "CLINA_CT1", CalledAE: "MAINPACS", Remote: "203.0.113.7:40000",
				Status: "0x0000", Bytes: 524288, Allowed: Bool(true), PatientID: "hmac-sha256:0123456789abcdef"}
			b.ResetTimer()
			for range b.N {
				w.Log(e)
			}
			for s.count() < b.N {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			w.Close()
		})
	}
}
