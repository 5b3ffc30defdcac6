package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/association"
	"github.com/dicomedge/dicomedge/association/dimse"
	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// insideListener is a plain listener for the loopback address 127.0.0.1
// only; 127.0.0.2 (also loopback) stands for a host outside allow_cidr.
const insideListener = `
listener "inside" {
  listen     = "127.0.0.1:0"
  tls        = false
  allow_cidr = ["127.0.0.1/32"]
}
`

// Rules for the listener tests: the PACS may echo the edge on the inside
// listener; "any-echo", with no listener, would match every AE pair that
// calls DICOMEDGE, but applies to TLS listeners only.
const insideRules = `
rule "inside-echo" {
  when {
    listener   = ["inside"]
    calling_ae = ["PACS"]
    called_ae  = ["DICOMEDGE"]
  }
  answer {}
}
rule "any-echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}
`

// dialPlain opens a plain TCP connection to addr from the local address
// from (127.0.0.x), "" for any.
func dialPlain(t testing.TB, addr, from string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoOn runs one C-ECHO on an established association and releases it.
func echoOn(t testing.TB, c net.Conn) {
	t.Helper()
	echo := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: association.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := dimse.WriteMessage(c, 1, echo, nil, 16384); err != nil {
		t.Fatal(err)
	}
	if p, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatalf("C-ECHO: %v", err)
	} else if _, ok := p.(*association.PDataTF); !ok {
		t.Fatalf("got %T, want the C-ECHO-RSP", p)
	}
	if err := association.WritePDU(c, &association.ReleaseRQ{}); err != nil {
		t.Fatal(err)
	}
	if p, err := readPDU(t, c, 5*time.Second); err != nil {
		t.Fatalf("A-RELEASE: %v", err)
	} else if _, ok := p.(*association.ReleaseRP); !ok {
		t.Fatalf("got %T, want A-RELEASE-RP", p)
	}
}

// A plain listener serves its allow_cidr only (anyone else is closed at
// once, without an answer, and audited); on it only rules that name it
// apply, and its clients are known by address, not certificate.
func TestPlainListener(t *testing.T) {
	e := startEdge(t, edgeOptions{Listeners: insideListener, Rules: insideRules})
	inside := e.listenerAddr(t, "inside")

	// From 127.0.0.2, outside allow_cidr: closed without a byte.
	c := dialPlain(t, inside, "127.0.0.2")
	_ = association.WritePDU(c, echoRQ("PACS", "DICOMEDGE"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 64)); n != 0 || !(errors.Is(err, io.EOF) || isReset(err)) {
		t.Fatalf("outside allow_cidr: read %d bytes, %v; want the connection closed without an answer", n, err)
	}
	ev := e.waitEvent(t, "connection.refused", func(ev audit.Event) bool { return ev.Event == "connection.refused" })
	if ev.Reason != "source-not-allowed" || ev.Listener != "inside" || !strings.HasPrefix(ev.Remote, "127.0.0.2:") {
		t.Errorf("refusal record %+v, want reason source-not-allowed, listener inside, remote 127.0.0.2", ev)
	}

	// From 127.0.0.1: plain DICOM, decided by the rule naming the listener.
	c = dialPlain(t, inside, "127.0.0.1")
	associate(t, c, echoRQ("PACS", "DICOMEDGE"), "rule inside-echo")
	echoOn(t, c)
	acc := e.waitEvent(t, "accepted on inside", func(ev audit.Event) bool {
		return ev.Event == audit.EventAccepted && ev.Listener == "inside"
	})
	if acc.Rule != "inside-echo" || acc.Client != nil || !strings.HasPrefix(acc.Remote, "127.0.0.1:") || acc.CallingAE != "PACS" {
		t.Errorf("accepted record %+v, want rule inside-echo, no client certificate, remote 127.0.0.1", acc)
	}

	// Another calling AE: "any-echo" would match its AE titles, but has no
	// listener, so it does not apply here: no rule matches.
	c = dialPlain(t, inside, "127.0.0.1")
	if err := association.WritePDU(c, echoRQ("OTHER", "DICOMEDGE")); err != nil {
		t.Fatal(err)
	}
	p, err := readPDU(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rj, ok := p.(*association.AssociateRJ); !ok || rj.Result != association.RejectPermanent || rj.Source != association.RejectSourceServiceUser || rj.Reason != association.RejectUserCallingAENotRecognized {
		t.Fatalf("got %#v, want A-ASSOCIATE-RJ 1/1/3", p)
	}
	rej := e.waitEvent(t, "rejected on inside", func(ev audit.Event) bool {
		return ev.Event == audit.EventRejected && ev.Listener == "inside"
	})
	if rej.Rule != "" || rej.CallingAE != "OTHER" {
		t.Errorf("rejected record %+v, want no rule", rej)
	}

	// The TLS listener is unchanged, and "any-echo" applies there.
	tc := e.goClient(t, e.pki.clientCert, e.pki.clientKey)
	associate(t, tc, echoRQ("OTHER", "DICOMEDGE"), "rule any-echo on the TLS listener")
	edgeAcc := e.waitEvent(t, "accepted on edge", func(ev audit.Event) bool {
		return ev.Event == audit.EventAccepted && ev.Listener == "edge"
	})
	if edgeAcc.Rule != "any-echo" || edgeAcc.Client == nil || edgeAcc.Client.CN != "client" {
		t.Errorf("accepted record on edge %+v", edgeAcc)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// A reload applies listener blocks: a new one listens, a moved one accepts
// on its new address only, a removed one stops accepting while its open
// association finishes, and one whose address cannot be bound is refused
// with a note, the rest of the reload applying.
func TestReloadListeners(t *testing.T) {
	e := startEdge(t, edgeOptions{})
	if e.Server.ListenerAddr("inside") != nil {
		t.Fatal("inside served before it is configured")
	}
	reload := func(listeners string) string {
		t.Helper()
		o := e.opts
		o.Listeners = listeners
		if listeners != "" {
			o.Rules = insideRules
		}
		if err := os.WriteFile(e.file, []byte(o.source(e.pki, "", "")), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Server.ReloadFile(e.file); err != nil {
			t.Fatalf("reload: %v", err)
		}
		var last audit.Event
		for _, ev := range e.events(t) {
			if ev.Event == audit.EventPolicyReloaded {
				last = ev
			}
		}
		return last.Detail
	}
	waitReloads := func(n int) {
		t.Helper()
		e.waitEvent(t, "reload", func(audit.Event) bool {
			k := 0
			for _, ev := range e.events(t) {
				if ev.Event == audit.EventPolicyReloaded {
					k++
				}
			}
			return k >= n
		})
	}

	reload(insideListener)
	first := e.listenerAddr(t, "inside")
	held := dialPlain(t, first, "127.0.0.1")
	associate(t, held, echoRQ("PACS", "DICOMEDGE"), "added listener")
	waitReloads(1)

	// Moved to a fixed port: the old address stops accepting.
	moved := testpeer.FreeAddr(t)
	reload(strings.Replace(insideListener, "127.0.0.1:0", moved, 1))
	waitReloads(2)
	if got := e.listenerAddr(t, "inside"); got != moved {
		t.Fatalf("inside on %s after the move, want %s", got, moved)
	}
	c := dialPlain(t, moved, "127.0.0.1")
	associate(t, c, echoRQ("PACS", "DICOMEDGE"), "moved listener")
	if nc, err := net.DialTimeout("tcp", first, 2*time.Second); err == nil {
		nc.Close()
		t.Errorf("the old address %s still accepts after the move", first)
	}

	// Moving onto an address in use is refused; the listener stays.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	detail := ""
	reload(strings.Replace(insideListener, "127.0.0.1:0", busy.Addr().String(), 1))
	waitReloads(3)
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventPolicyReloaded {
			detail = ev.Detail
		}
	}
	if !strings.Contains(detail, `listener "inside" NOT moved`) || e.Server.ListenerAddr("inside").String() != moved {
		t.Errorf("move onto a busy address: detail %q, listener on %v; want it refused and kept on %s", detail, e.Server.ListenerAddr("inside"), moved)
	}

	// Removed: no new connections; the association opened before the
	// removal (on the first address) still completes.
	reload("")
	waitReloads(4)
	deadline := time.Now().Add(20 * time.Second)
	for e.Server.ListenerAddr("inside") != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a := e.Server.ListenerAddr("inside"); a != nil {
		t.Fatalf("inside still served on %s after its removal", a)
	}
	if nc, err := net.DialTimeout("tcp", moved, 2*time.Second); err == nil {
		nc.Close()
		t.Errorf("the removed listener's address %s still accepts", moved)
	}
	echoOn(t, held)
	echoOn(t, c)
}

// A flood from outside allow_cidr is refused in the accept loop: every
// connection is closed and counted, the audit trail gets a bounded number of
// records, and the PACS is still served at once.
func TestPlainListenerOutsiderFlood(t *testing.T) {
	e := startEdge(t, edgeOptions{Listeners: insideListener, Rules: insideRules, AdminListen: true})
	inside := e.listenerAddr(t, "inside")
	const n = 200
	for range n {
		c := dialPlain(t, inside, "127.0.0.2")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if k, err := c.Read(make([]byte, 1)); k != 0 || err == nil {
			t.Fatalf("an outsider's connection got %d bytes, %v", k, err)
		}
		c.Close()
	}
	m := scrape(t, "http://"+e.Server.AdminAddr().String()+"/metrics")
	if got := m[`dicomedge_connections_refused_total{reason="source-not-allowed"}`]; got != n {
		t.Errorf("dicomedge_connections_refused_total{reason=source-not-allowed} = %v, want %d", got, n)
	}
	c := dialPlain(t, inside, "127.0.0.1")
	associate(t, c, echoRQ("PACS", "DICOMEDGE"), "the PACS during a flood of outsiders")
	echoOn(t, c)
	records := 0
	for _, ev := range e.events(t) {
		if ev.Event == audit.EventConnectionRefused && ev.Reason == RefusedSourceNotAllowed {
			records++
		}
	}
	if records == 0 || records >= n {
		t.Errorf("%d connection.refused records for %d refusals: want some, bounded", records, n)
	}
}
