package audit

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

func syslogEvents() []Event {
	return []Event{
		{Event: EventTLSFailed, Remote: "203.0.113.9:50000", Reason: "unknown-ca"},
		{Event: EventAccepted, Assoc: "a1", Remote: "127.0.0.1:40000", Client: &Client{Subject: "CN=mod1,O=Clinic A", CN: "mod1"}, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS", Rule: "r", Action: "relay", Backend: "pacs"},
		{Event: EventDIMSE, Assoc: "a1", Remote: "127.0.0.1:40000", CallingAE: "CLINA_CT1", CalledAE: "MAINPACS", Service: "C-STORE",
			SOPClass: "1.2.840.10008.5.1.4.1.1.2", SOPInstance: "1.2.3.4.5", StudyUID: "1.2.3.4", Status: "0x0000", PatientID: "hmac-sha256:ab", Bytes: 1000, Allowed: Bool(true)},
		{Event: EventDIMSE, Assoc: "a1", Service: "C-MOVE", Status: "0x0124", MoveDestination: "EVIL", Allowed: Bool(false)},
		{Event: EventRejected, Remote: "198.51.100.7:1", CallingAE: "WHO <&>", CalledAE: "MAINPACS", Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"},
		{Event: EventReleased, Assoc: "a1", BytesIn: 10, BytesOut: 20},
		{Event: EventPolicyReloaded, Detail: "3 rules"},
	}
}

// siem is an rsyslogd collector that requires client certificates, and the
// client side the edge uses towards it: a certificate from the edge's own
// CA (which the collector trusts) and the collector's root.
type siem struct {
	*testpeer.Rsyslog
	edgePKI *testpeer.PKI
	tls     *tls.Config
}

func startSIEM(t *testing.T) *siem {
	t.Helper()
	testpeer.Require(t, "rsyslogd", "openssl")
	edge := testpeer.NewPKI(t, "edge-ca")
	r := testpeer.StartRsyslog(t, testpeer.FreeAddr(t), edge.CACert)
	certFile, keyFile := edge.Issue(t, "edge", testpeer.CertOptions{CN: "edge-1.example.org", DNS: []string{"edge-1.example.org"}})
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(r.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return &siem{Rsyslog: r, edgePKI: edge,
		tls: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{pair}}}
}

// config is a SyslogConfig for this collector with short test timings.
func (s *siem) config(format string) *SyslogConfig {
	return &SyslogConfig{Address: s.Addr, Format: format, TLS: s.tls, Hostname: "edge-1", Poll: 20 * time.Millisecond,
		ConfirmAfter: 200 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		CloseTimeout: 30 * time.Second} // Close waits only until delivered; dial+TLS can take seconds on a loaded machine
}

// seqs returns the seq of each stored JSON message.
func seqs(t *testing.T, lines []string) []uint64 {
	t.Helper()
	var out []uint64
	for _, l := range lines {
		parts := strings.SplitN(l, "|", 5)
		var r struct{ Seq uint64 }
		if len(parts) != 5 || json.Unmarshal([]byte(parts[4]), &r) != nil {
			t.Fatalf("stored line %q is not a JSON record", l)
		}
		out = append(out, r.Seq)
	}
	return out
}

func TestSyslogJSONToRsyslog(t *testing.T) {
	c := startSIEM(t)
	w := openT(t, Config{Syslog: c.config("json")})
	fwd := w.Forwarder()
	events := syslogEvents()
	for _, e := range events {
		w.Log(e)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := c.WaitLines(t, len(events))
	local := readLinesT(t, w.cfg.File)
	for i, l := range got {
		parts := strings.SplitN(l, "|", 5)
		if len(parts) != 5 {
			t.Fatalf("stored line %q", l)
		}
		wantPri := "85"
		if outcome(&events[i]) != 0 {
			wantPri = "84"
		}
		if parts[0] != wantPri || parts[1] != events[i].Event || parts[2] != "edge-1" || parts[3] != "dicomedge" {
			t.Fatalf("message %d header %q; want pri %s msgid %s host edge-1 app dicomedge", i, parts[:4], wantPri, events[i].Event)
		}
		// The collector holds the very line of the hash chain, seq and prev included.
		if want := strings.TrimSuffix(string(local[i]), "\n"); parts[4] != want {
			t.Fatalf("message %d MSG\n got %s\nwant %s", i, parts[4], want)
		}
	}
	if len(got) != len(events) || fwd.Sent() != uint64(len(events)) || fwd.Backlog() != 0 || fwd.Delivered() != uint64(len(events)) {
		t.Fatalf("collector holds %d, sent %d, backlog %d, delivered %d; want %d each, backlog 0",
			len(got), fwd.Sent(), fwd.Backlog(), fwd.Delivered(), len(events))
	}
	if c, err := readCursor(CursorPath(w.cfg.File)); err != nil || c.Seq != uint64(len(events)) || c.Hash != hashHex(bytes.TrimSuffix(local[len(events)-1], []byte("\n"))) {
		t.Fatalf("cursor %+v, %v; want the last record", c, err)
	}
}

func TestSyslogATNAToRsyslog(t *testing.T) {
	c := startSIEM(t)
	w := openT(t, Config{Syslog: c.config("")})
	events := syslogEvents()
	for _, e := range events {
		w.Log(e)
	}
	w.Close()
	got := c.WaitLines(t, len(events))
	want := []struct {
		id, types, action string
		outcome           int
		participants      int
		objects           int
	}{
		{"110113", "110126", "E", 4, 2, 0},
		{"110114", "110122", "E", 0, 2, 0},
		{"110104", "", "C", 0, 2, 2},
		{"110104", "", "R", 4, 2, 0},
		{"110114", "110122", "E", 4, 2, 0},
		{"110114", "110123", "E", 0, 2, 0},
		{"110113", "110129", "E", 0, 1, 0},
	}
	for i, l := range got {
		parts := strings.SplitN(l, "|", 5)
		if parts[1] != "IHE+RFC-3881" {
			t.Fatalf("message %d msgid %q", i, parts[1])
		}
		var m atnaMessage
		if err := xml.Unmarshal([]byte(parts[4]), &m); err != nil {
			t.Fatalf("message %d is not XML: %v\n%s", i, err, parts[4])
		}
		var types []string
		for _, c := range m.Event.Types {
			types = append(types, c.Code)
		}
		w := want[i]
		if m.Event.ID.Code != w.id || m.Event.ID.System != "DCM" || strings.Join(types, ",") != w.types ||
			m.Event.Action != w.action || m.Event.Outcome != w.outcome || len(m.Participants) != w.participants || len(m.Objects) != w.objects {
			t.Fatalf("message %d (%s): got %+v\nXML %s", i, events[i].Event, m, parts[4])
		}
		if m.Source.ID != "edge-1" {
			t.Fatalf("AuditSourceID %q", m.Source.ID)
		}
	}
	// Spot checks on the content an ATNA repository keys on.
	store := strings.SplitN(got[2], "|", 5)[4]
	for _, s := range []string{`AlternativeUserID="AETITLES=CLINA_CT1"`, `NetworkAccessPointID="127.0.0.1" NetworkAccessPointTypeCode="2"`,
		`<Instance UID="1.2.3.4.5">`, `ParticipantObjectID="1.2.3.4" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="110180"`, `ParticipantObjectID="hmac-sha256:ab" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"`} {
		if !strings.Contains(store, s) {
			t.Fatalf("C-STORE message lacks %s:\n%s", s, store)
		}
	}
	if !strings.Contains(got[4], `AETITLES=WHO &lt;&amp;&gt;`) {
		t.Fatalf("AE title not XML-escaped: %s", got[4])
	}
}

func TestSyslogFrame(t *testing.T) {
	f := &Forwarder{cfg: SyslogConfig{Format: "json", Hostname: "edge one\x00"}, pid: "42"}
	e := Event{Time: time.Date(2026, 11, 25, 1, 2, 3, 123456789, time.UTC), Event: EventTLSFailed, Reason: "bad"}
	line := e.appendJSON(nil)
	got := string(f.frame(nil, &e, line))
	msg := "<84>1 2026-11-25T01:02:03.123456Z edgeone dicomedge 42 tls.failed - " + string(line)
	if want := fmt.Sprintf("%d %s", len(msg), msg); got != want {
		t.Fatalf("frame\n got %q\nwant %q", got, want)
	}
	if err := checkSyslog(&SyslogConfig{Address: "nohostport"}); err == nil {
		t.Fatal("bad address accepted")
	}
	if err := checkSyslog(&SyslogConfig{Address: "a:1", Format: "cef"}); err == nil {
		t.Fatal("bad format accepted")
	}
	if !bytes.HasPrefix(ATNA(&e, "h"), []byte(`<?xml version="1.0" encoding="UTF-8"?><AuditMessage>`)) {
		t.Fatalf("ATNA prefix: %s", ATNA(&e, "h"))
	}
}

// The collector goes away while the edge writes, and the edge restarts
// while it is away: once it is back it holds every record, in order, none
// twice, because the file is the queue and the cursor survives the restart.
func TestSyslogBacklogAcrossOutageAndRestart(t *testing.T) {
	c := startSIEM(t)
	file := filepath.Join(t.TempDir(), "audit", "audit.jsonl")
	var logs testpeer.SyncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	cfg := c.config("json")
	cfg.Logger = logger
	w := openT(t, Config{File: file, Syslog: cfg, Fsync: 10 * time.Millisecond})
	for i := range 5 {
		w.Log(Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: i + 1})
	}
	c.WaitLines(t, 5)
	waitFor(t, "the first records confirmed", func() bool { return w.Forwarder().Delivered() == 5 })

	c.Stop() // collector outage
	for i := 5; i < 10; i++ {
		w.Log(Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: i + 1})
	}
	waitFor(t, "the outage noticed", func() bool { return strings.Contains(logs.String(), "records wait in the audit file") })
	stopStart := time.Now()
	if err := w.Close(); err != nil { // edge stops while the collector is down
		t.Fatal(err)
	}
	if d := time.Since(stopStart); d > 10*time.Second { // CloseTimeout is 30 s: Close must not wait for a collector that is away
		t.Fatalf("Close took %v during the outage", d)
	}
	if cur, err := readCursor(CursorPath(file)); err != nil || cur.Seq != 5 {
		t.Fatalf("cursor after the stop: %+v, %v; want seq 5", cur, err)
	}

	w2 := openT(t, Config{File: file, Syslog: cfg, Fsync: 10 * time.Millisecond}) // edge restarts, collector still down
	for i := 10; i < 15; i++ {
		w2.Log(Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: i + 1})
	}
	waitFor(t, "the backlog counted", func() bool { return w2.Forwarder().Backlog() == 10 })
	time.Sleep(time.Second) // a few reconnect attempts fail
	c.Restart()
	got := seqs(t, c.WaitLines(t, 15))
	waitFor(t, "everything confirmed", func() bool { return w2.Forwarder().Backlog() == 0 })
	w2.Close()
	got = seqs(t, c.Lines())
	want := make([]uint64, 15)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("collector holds seqs %v; want %v", got, want)
	}
	// One warning per outage, not one per failed reconnect.
	if n := strings.Count(logs.String(), "records wait in the audit file"); n != 2 { // one per process
		t.Fatalf("%d outage warnings; want one per writer:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "reachable again") {
		t.Fatalf("no recovery logged:\n%s", logs.String())
	}
}

// An RFC 5425 collector that requires client certificates refuses a sender
// without one: nothing counts as delivered, the backlog stays, and the
// outage is one warning however many reconnects fail.
func TestSyslogWithoutClientCertificateDeliversNothing(t *testing.T) {
	c := startSIEM(t)
	var logs testpeer.SyncBuffer
	cfg := c.config("json")
	cfg.TLS = cfg.TLS.Clone()
	cfg.TLS.Certificates = nil
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})
	cfg.CloseTimeout = 200 * time.Millisecond
	w := openT(t, Config{Syslog: cfg})
	for i := range 3 {
		w.Log(Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: i + 1})
	}
	waitFor(t, "several failed attempts", func() bool { return strings.Count(logs.String(), "[DEBUG]") >= 3 })
	if f := w.Forwarder(); f.Delivered() != 0 || f.Backlog() != 3 {
		t.Fatalf("delivered %d backlog %d; want 0 and 3", f.Delivered(), f.Backlog())
	}
	if n := strings.Count(logs.String(), "[WARN]"); n != 1 {
		t.Fatalf("%d warnings; want one for the outage:\n%s", n, logs.String())
	}
	w.Close()
	if got := c.Lines(); len(got) != 0 {
		t.Fatalf("the collector stored messages from a sender without a certificate: %q", got)
	}
}

// A collector that is down for long does not make the edge hold the
// backlog in memory: it stays in the file, and the forwarder holds at most
// ReadAhead records.
func TestSyslogBacklogDoesNotGrowMemory(t *testing.T) {
	// A port that refuses connections: a listener closed at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := &SyslogConfig{Address: addr, Format: "json", Poll: 10 * time.Millisecond, ReadAhead: 64, InFlight: 64, MaxBackoff: 50 * time.Millisecond,
		CloseTimeout: 50 * time.Millisecond}
	w := openT(t, Config{Syslog: cfg, Fsync: 100 * time.Millisecond, RotateSize: 4 << 20})
	detail := strings.Repeat("x", 2000)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for i := range 1000 { // warm up: buffers, the reader's state
		w.Log(Event{Event: EventPolicyReloaded, Detail: fmt.Sprint(i, detail)})
	}
	waitFor(t, "the backlog counted", func() bool { return w.Forwarder().Backlog() == 1000 })
	before := heap()
	const n = 20000 // about 40 MB of records
	for i := range n {
		w.Log(Event{Event: EventPolicyReloaded, Detail: fmt.Sprint(i, detail)})
	}
	waitFor(t, "the backlog counted", func() bool { return w.Forwarder().Backlog() == 1000+n })
	time.Sleep(200 * time.Millisecond) // the reader catches up to its bound
	after := heap()
	t.Logf("heap before %d KiB, after %d KiB with %d records (%d MB) behind the collector", before>>10, after>>10, 1000+n, (1000+n)*2/1000)
	if after > before+8<<20 {
		t.Fatalf("heap grew from %d to %d bytes with the collector down", before, after)
	}
	if l := len(w.Forwarder().items); l > 64 {
		t.Fatalf("%d records read ahead; bound 64", l)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
