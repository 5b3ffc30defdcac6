package audit

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// collector is a real rsyslogd receiving RFC 5425 (TLS, octet counting) on
// a loopback port and storing one line per message:
// PRI|MSGID|HOSTNAME|APP-NAME|MSG.
type collector struct {
	addr, out, ca string
	proc          *testpeer.Process
}

func startRsyslog(t *testing.T, addr string) *collector {
	t.Helper()
	testpeer.Require(t, "rsyslogd", "openssl")
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"); err != nil && !testpeer.InCI() {
		t.Skip("rsyslog-gnutls not installed")
	}
	pki := testpeer.NewPKI(t, "siem")
	cert, key := pki.Issue(t, "siem", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true, RSA: true})
	dir := t.TempDir()
	c := &collector{addr: addr, out: filepath.Join(dir, "received.log"), ca: pki.CACert}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "rsyslog.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`
global(
  workDirectory=%q
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile=%q
  defaultNetstreamDriverCertFile=%q
  defaultNetstreamDriverKeyFile=%q
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port=%q address="127.0.0.1")
template(name="line" type="string" string="%%pri%%|%%msgid%%|%%hostname%%|%%app-name%%|%%msg%%\n")
action(type="omfile" file=%q template="line")
`, dir, pki.CACert, cert, key, port, c.out)), 0o600)
	c.proc = testpeer.Start(t, "rsyslogd", "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	testpeer.WaitListening(t, addr, testpeer.StartupTimeout, c.proc)
	return c
}

// lines waits until the collector stored n messages (or 15 s) and returns them.
func (c *collector) lines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(c.out)
		got = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) > 0 && len(got) >= n {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("collector stored %d of %d messages:\n%s\nrsyslogd output:\n%s", len(got), n, strings.Join(got, "\n"), c.proc.Output())
	return nil
}

func syslogEvents() []Event {
	return []Event{
		{Event: EventTLSFailed, Remote: "203.0.113.9:50000", Reason: "unknown-ca"},
		{Event: EventAccepted, Assoc: "a1", Remote: "127.0.0.1:40000", Client: &Client{Subject: "CN=mod1,O=Clinic A", CN: "mod1"}, CallingAE: "CLINA_CT1", CalledAE: "MAINPACS", Rule: "r", Action: "relay", Backend: "pacs"},
		{Event: EventDIMSE, Assoc: "a1", Remote: "127.0.0.1:40000", CallingAE: "CLINA_CT1", CalledAE: "MAINPACS", Service: "C-STORE",
			SOPClass: "1.2.840.10008.5.1.4.1.1.2", SOPInstance: "1.2.3.4.5", Status: "0x0000", PatientID: "hmac-sha256:ab", Bytes: 1000, Allowed: Bool(true)},
		{Event: EventDIMSE, Assoc: "a1", Service: "C-MOVE", Status: "0x0124", MoveDestination: "EVIL", Allowed: Bool(false)},
		{Event: EventRejected, Remote: "198.51.100.7:1", CallingAE: "WHO <&>", CalledAE: "MAINPACS", Result: 1, Source: 1, ReasonCode: 3, Reason: "calling-ae-not-recognized"},
		{Event: EventReleased, Assoc: "a1", BytesIn: 10, BytesOut: 20},
		{Event: EventPolicyReloaded, Detail: "3 rules"},
	}
}

func TestSyslogJSONToRsyslog(t *testing.T) {
	c := startRsyslog(t, testpeer.FreeAddr(t))
	fwd, err := NewForwarder(SyslogConfig{Address: c.addr, Format: "json", CA: []string{c.ca}, ServerName: "localhost", Hostname: "edge-1",
		CloseTimeout: 30 * time.Second}) // Close waits only until delivered; 5s of dial+TLS can pass on a loaded machine
	if err != nil {
		t.Fatal(err)
	}
	w := openT(t, Config{Forwarder: fwd})
	events := syslogEvents()
	for _, e := range events {
		w.Log(e)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := c.lines(t, len(events))
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
	if fwd.Dropped() != 0 || fwd.Sent() != uint64(len(events)) {
		t.Fatalf("sent %d dropped %d", fwd.Sent(), fwd.Dropped())
	}
}

func TestSyslogATNAToRsyslog(t *testing.T) {
	c := startRsyslog(t, testpeer.FreeAddr(t))
	fwd, err := NewForwarder(SyslogConfig{Address: c.addr, CA: []string{c.ca}, ServerName: "localhost", Hostname: "edge-1",
		CloseTimeout: 30 * time.Second}) // Close waits only until delivered; 5s of dial+TLS can pass on a loaded machine
	if err != nil {
		t.Fatal(err)
	}
	w := openT(t, Config{Forwarder: fwd})
	events := syslogEvents()
	for _, e := range events {
		w.Log(e)
	}
	w.Close()
	got := c.lines(t, len(events))
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
		`<Instance UID="1.2.3.4.5">`, `ParticipantObjectID="hmac-sha256:ab" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"`} {
		if !strings.Contains(store, s) {
			t.Fatalf("C-STORE message lacks %s:\n%s", s, store)
		}
	}
	if !strings.Contains(got[4], `AETITLES=WHO &lt;&amp;&gt;`) {
		t.Fatalf("AE title not XML-escaped: %s", got[4])
	}
}

// The collector is down when events happen; they wait in the queue and
// arrive once it is up, while Log never blocks on it.
func TestSyslogDeliversAfterCollectorComesUp(t *testing.T) {
	// The collector's port is held by a listener that hangs up on every
	// connection (a collector that is down) until rsyslogd takes it: a port
	// merely "free a moment ago" could be taken by someone else during the
	// seconds a loaded machine needs to get there.
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := hold.Addr().String()
	var refused atomic.Int32
	holdDone := make(chan struct{})
	go func() {
		defer close(holdDone)
		for {
			c, err := hold.Accept()
			if err != nil {
				return
			}
			c.Close()
			refused.Add(1)
		}
	}()
	t.Cleanup(func() { hold.Close(); <-holdDone })
	// Certificates are needed before the collector exists: make them via a
	// first collector start on another port, then reuse its CA.
	pre := startRsyslog(t, testpeer.FreeAddr(t))
	fwd, err := NewForwarder(SyslogConfig{Address: addr, Format: "json", CA: []string{pre.ca}, ServerName: "localhost", CloseTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w := openT(t, Config{Forwarder: fwd})
	start := time.Now()
	for i := range 5 {
		w.Log(Event{Event: EventDIMSE, Service: "C-ECHO", MessageID: i + 1})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Log took %v with the collector down", d) // not a benchmark: a stall would be seconds of dial timeouts
	}
	// Let the first dials fail, then hand the port to rsyslogd.
	deadline := time.Now().Add(30 * time.Second)
	for refused.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if refused.Load() == 0 {
		t.Fatal("the forwarder never tried the collector's address")
	}
	hold.Close()
	<-holdDone
	c := startRsyslogWithCA(t, addr, pre)
	w.Close()
	got := c.lines(t, 5)
	for i, l := range got {
		if !strings.Contains(l, fmt.Sprintf(`"message_id":%d`, i+1)) {
			t.Fatalf("message %d: %s", i, l)
		}
	}
}

// startRsyslogWithCA starts a second collector on addr; the PKI of pre is
// reused by issuing from the same files rsyslog loaded.
func startRsyslogWithCA(t *testing.T, addr string, pre *collector) *collector {
	t.Helper()
	// Same configuration, different port and output file.
	confB, err := os.ReadFile(filepath.Join(filepath.Dir(pre.out), "rsyslog.conf"))
	if err != nil {
		t.Fatal(err)
	}
	_, oldPort, _ := net.SplitHostPort(pre.addr)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	c := &collector{addr: addr, out: filepath.Join(dir, "received.log"), ca: pre.ca}
	conf := string(confB)
	conf = strings.Replace(conf, fmt.Sprintf("port=%q", oldPort), fmt.Sprintf("port=%q", port), 1)
	conf = strings.Replace(conf, pre.out, c.out, 1)
	conf = strings.Replace(conf, fmt.Sprintf("workDirectory=%q", filepath.Dir(pre.out)), fmt.Sprintf("workDirectory=%q", dir), 1)
	os.WriteFile(filepath.Join(dir, "rsyslog.conf"), []byte(conf), 0o600)
	c.proc = testpeer.Start(t, "rsyslogd", "-n", "-f", filepath.Join(dir, "rsyslog.conf"), "-i", filepath.Join(dir, "rsyslogd.pid"))
	testpeer.WaitListening(t, addr, testpeer.StartupTimeout, c.proc)
	return c
}

func TestSyslogQueueFullDropsWithoutBlocking(t *testing.T) {
	// A listener that accepts TCP but never completes TLS: the sender is stuck.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	fwd, err := NewForwarder(SyslogConfig{Address: ln.Addr().String(), Format: "json", QueueSize: 4, CloseTimeout: 100 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w := openT(t, Config{Forwarder: fwd})
	for range 50 {
		if !w.Log(Event{Event: EventCertRenewed}) {
			t.Fatal("the audit file refused an event because the collector is stuck")
		}
	}
	w.Close()
	if fwd.Dropped() < 50-4-1 || fwd.Sent() != 0 {
		t.Fatalf("dropped %d sent %d; want at least %d dropped", fwd.Dropped(), fwd.Sent(), 50-4-1)
	}
	if n, err := Verify(Files(w.cfg.File)); err != nil || n != 50 {
		t.Fatalf("the local chain must hold everything: %d, %v", n, err)
	}
}

func TestSyslogFrame(t *testing.T) {
	f := &Forwarder{cfg: SyslogConfig{Format: "json", Hostname: "edge one\x00"}, pid: "42"}
	e := Event{Time: time.Date(2026, 11, 25, 1, 2, 3, 123456789, time.UTC), Event: EventTLSFailed, Reason: "bad"}
	line := e.appendJSON(nil)
	got := string(f.frame(nil, &fwdItem{e, line}))
	msg := "<84>1 2026-11-25T01:02:03.123456Z edgeone dicomedge 42 tls.failed - " + string(line)
	if want := fmt.Sprintf("%d %s", len(msg), msg); got != want {
		t.Fatalf("frame\n got %q\nwant %q", got, want)
	}
	if _, err := NewForwarder(SyslogConfig{Address: "nohostport"}); err == nil {
		t.Fatal("bad address accepted")
	}
	if _, err := NewForwarder(SyslogConfig{Address: "a:1", Format: "cef"}); err == nil {
		t.Fatal("bad format accepted")
	}
	if !bytes.HasPrefix(ATNA(&e, "h"), []byte(`<?xml version="1.0" encoding="UTF-8"?><AuditMessage>`)) {
		t.Fatalf("ATNA prefix: %s", ATNA(&e, "h"))
	}
}
