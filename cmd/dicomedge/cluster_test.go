package main

import (
	"bufio"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// balancerSource is the address HAProxy connects to the edges from
// (`source` in contrib/haproxy.cfg terms); clients connect from 127.0.0.1.
// A rule that rejects the balancer's own address proves the edges decide
// on the PROXY header's address instead.
const balancerSource = "127.0.0.3"

// clusterEdge is one `dicomedge serve` process of the cluster.
type clusterEdge struct {
	name, config, listen, admin, audit string
	proc                               *testpeer.Process
}

func clusterPolicy(e *clusterEdge, pacs, siem, siemCA, format string) string {
	return fmt.Sprintf(`
edge {
  ae_title       = "DICOMEDGE"
  listen         = %q
  admin_listen   = %q
  artim_timeout  = "5s"
  drain_timeout  = "2s"
  proxy_protocol = ["%s/32"]
}
tls {
  client_ca = ["certs/ca.pem"]
  cert_file = "certs/edge.pem"
  key_file  = "certs/edge-key.pem"
}
audit {
  file  = %q
  fsync = "50ms"
  syslog {
    address = %q
    format  = %q
    ca      = [%q]
  }
}
backend "pacs" {
  address  = %q
  ae_title = "REALPACS"
}
rule "not-the-balancer" {
  when { source_cidr = ["%s/32"] }
  reject { reason = "calling-ae-not-recognized" }
}
rule "store" {
  when {
    source_cidr = ["127.0.0.1/32"]
    client_cn   = ["client"]
    called_ae   = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE"]
  }
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
`, e.listen, e.admin, balancerSource, e.audit, siem, format, siemCA, pacs, balancerSource)
}

func (e *clusterEdge) start(t *testing.T, bin string) {
	t.Helper()
	e.proc = testpeer.Start(t, bin, "serve", "--config", e.config)
	testpeer.WaitListening(t, e.listen, 30*time.Second, e.proc)
	testpeer.WaitListening(t, e.admin, 10*time.Second, e.proc)
	waitUntil(t, e.name+" /readyz 200", func() bool { code, _ := httpGetQuiet("http://" + e.admin + "/readyz"); return code == 200 })
}

// stop sends SIGTERM and waits for exit status 0.
func (e *clusterEdge) stop(t *testing.T) {
	t.Helper()
	_ = e.proc.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.proc.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop:\n%s", e.name, e.proc.Output())
	}
	if code := testpeer.ExitCode(e.proc.Err()); code != 0 {
		t.Fatalf("%s exit %d:\n%s", e.name, code, e.proc.Output())
	}
}

// records returns the audit file's records (decoded) and raw lines.
func (e *clusterEdge) records(t *testing.T) ([]map[string]any, []string) {
	t.Helper()
	f, err := os.Open(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []map[string]any
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", e.audit, err)
		}
		recs = append(recs, r)
		lines = append(lines, sc.Text())
	}
	return recs, lines
}

func (e *clusterEdge) count(t *testing.T, event string) int {
	recs, _ := e.records(t)
	n := 0
	for _, r := range recs {
		if r["event"] == event {
			n++
		}
	}
	return n
}

// metric reads one unlabelled sample from the edge's /metrics.
func (e *clusterEdge) metric(t *testing.T, name string) float64 {
	t.Helper()
	code, body := httpGetQuiet("http://" + e.admin + "/metrics")
	if code != 200 {
		t.Fatalf("%s /metrics: %d", e.name, code)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%s /metrics has no %s", e.name, name)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// Two edge processes behind HAProxy (TCP mode, send-proxy-v2, /readyz
// health checks), each forwarding its audit trail to an rsyslog collector
// that requires client certificates: one in ATNA, one in JSON.
func TestClusterBehindHAProxy(t *testing.T) {
	testpeer.Require(t, "haproxy", "storescu", "storescp", "rsyslogd")
	bin := buildBinary(t)
	dir := t.TempDir()
	if out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), bin, "certs", "init", "--dir", filepath.Join(dir, "certs")); err != nil {
		t.Fatalf("certs init: %v\n%s", err, out)
	}
	certs := filepath.Join(dir, "certs")
	pacs := testpeer.StartStoreSCP(t, "REALPACS")
	// One collector per edge: edge1 sends ATNA, edge2 JSON. Both trust the
	// edges' CA, and the edges present their own certificate.
	siemATNA := testpeer.StartRsyslog(t, testpeer.FreeAddr(t), filepath.Join(certs, "ca.pem"))
	siemJSON := testpeer.StartRsyslog(t, testpeer.FreeAddr(t), filepath.Join(certs, "ca.pem"))
	edges := []*clusterEdge{{name: "edge1"}, {name: "edge2"}}
	for i, e := range edges {
		e.listen, e.admin = testpeer.FreeAddr(t), testpeer.FreeAddr(t)
		e.audit = filepath.Join(dir, e.name, "audit.jsonl")
		e.config = filepath.Join(dir, e.name+".hcl")
		siem, format := siemATNA, "atna"
		if i == 1 {
			siem, format = siemJSON, "json"
		}
		if err := os.WriteFile(e.config, []byte(clusterPolicy(e, pacs.Addr, siem.Addr, siem.CA, format)), 0o600); err != nil {
			t.Fatal(err)
		}
		e.start(t, bin)
	}

	// HAProxy with contrib/haproxy.cfg as shipped, moved to loopback: the
	// instances' addresses and admin ports, faster health checks, and the
	// balancer's own source address. Without "timeout check" a check's
	// answer must come within inter: 200ms is too short on a loaded machine
	// (an edge answering /readyz 200 in 202ms was marked DOWN, fall 1, and
	// got none of the associations), so answers get 5s while checks still
	// start every 200ms and a refused or 503 check fails at once.
	shipped, err := os.ReadFile("../../contrib/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	hconf := filepath.Join(dir, "haproxy.cfg")
	_, addrs := testpeer.StartListening(t, 1, "haproxy", func(addrs []string) []string {
		conf := string(shipped)
		for _, r := range [][2]string{
			{"  bind :2762\n", "  bind " + addrs[0] + "\n"},
			{"  log stdout format raw local0\n", ""},
			{"  balance leastconn\n", "  balance leastconn\n  source " + balancerSource + "\n  timeout check 5s\n"},
			{"inter 2s", "inter 200ms"},
			{"server edge1 10.0.1.21:2762 send-proxy-v2 check port 9102", fmt.Sprintf("server edge1 %s send-proxy-v2 check port %d", edges[0].listen, testpeer.Port(edges[0].admin))},
			{"server edge2 10.0.1.22:2762 send-proxy-v2 check port 9102", fmt.Sprintf("server edge2 %s send-proxy-v2 check port %d", edges[1].listen, testpeer.Port(edges[1].admin))},
		} {
			if !strings.Contains(conf, r[0]) {
				t.Fatalf("contrib/haproxy.cfg no longer contains %q", r[0])
			}
			conf = strings.Replace(conf, r[0], r[1], 1)
		}
		if err := os.WriteFile(hconf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"-db", "-f", hconf}
	})
	front := addrs[0]

	files, _ := testpeer.WriteDICOMFiles(t, filepath.Join(dir, "images"), "PAT-CLUSTER", 1, 16, 16)
	store := func() (string, error) {
		args := []string{"+tls", filepath.Join(certs, "client-key.pem"), filepath.Join(certs, "client.pem"), "+cf", filepath.Join(certs, "ca.pem"),
			"-aet", "STORESCU", "-aec", "MAINPACS", testpeer.Host(front), fmt.Sprint(testpeer.Port(front)), files[0]}
		return testpeer.Run(testpeer.Context(t, 30*time.Second), "storescu", args...)
	}
	for i := range 4 {
		if out, err := store(); err != nil {
			t.Fatalf("storescu +tls through HAProxy, association %d: %v\n%s", i+1, err, out)
		}
	}
	// Round robin: both edges relayed, each audited the client's address
	// (127.0.0.1), never the balancer's, and decided by rule "store".
	for _, e := range edges {
		waitUntil(t, e.name+" association.released", func() bool { return e.count(t, "association.released") >= 2 })
		recs, _ := e.records(t)
		accepted := 0
		for _, r := range recs {
			remote, _ := r["remote"].(string)
			if strings.HasPrefix(remote, balancerSource+":") {
				t.Errorf("%s audited the balancer's address: %v", e.name, r)
			}
			if r["event"] == "association.accepted" {
				accepted++
				if !strings.HasPrefix(remote, "127.0.0.1:") || r["rule"] != "store" {
					t.Errorf("%s: accepted association from %q by rule %v; want 127.0.0.1 by rule store", e.name, remote, r["rule"])
				}
			}
		}
		if accepted != 2 {
			t.Errorf("%s accepted %d associations; want 2 of 4 (leastconn takes turns between idle instances)", e.name, accepted)
		}
	}
	if pacs.Count() < 1 {
		t.Errorf("storescp stored nothing")
	}

	// A PROXY header from an address not in edge.proxy_protocol (a client
	// connecting straight to an edge, from 127.0.0.1) is refused and audited.
	c, err := net.Dial("tcp", edges[0].listen)
	if err != nil {
		t.Fatal(err)
	}
	hdr := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 4000}, c.RemoteAddr())
	if _, err := hdr.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Errorf("the edge answered %d bytes to a PROXY header from an untrusted address", n)
	}
	c.Close()
	waitUntil(t, "connection.refused proxy-header", func() bool {
		recs, _ := edges[0].records(t)
		for _, r := range recs {
			if r["event"] == "connection.refused" && r["reason"] == "proxy-header" {
				return true
			}
		}
		return false
	})

	// Every record of edge1 reached its collector, and its C-STORE went as
	// DICOM Instances Transferred naming the client, AE titles and study.
	// Then edge1 is killed: new associations go to edge2 and succeed.
	waitUntil(t, "edge1's backlog delivered", func() bool {
		return edges[0].metric(t, "dicomedge_audit_forward_backlog_records") == 0 &&
			edges[0].metric(t, "dicomedge_audit_forward_last_delivered_timestamp_seconds") > 0
	})
	recs1, _ := edges[0].records(t)
	atna := siemATNA.WaitLines(t, len(recs1))
	if len(atna) != len(recs1) {
		t.Fatalf("ATNA collector holds %d messages for %d audit records", len(atna), len(recs1))
	}
	checkATNAStore(t, atna, recs1)
	// Killed mid-run: an association is under way through the balancer
	// (on either edge) when edge1 dies.
	inflight := make(chan error, 1)
	go func() { _, err := store(); inflight <- err }()
	time.Sleep(30 * time.Millisecond)
	_ = edges[0].proc.Cmd.Process.Kill()
	<-edges[0].proc.Done()
	t.Logf("the association under way when edge1 was killed: err=%v", <-inflight)
	before := edges[1].count(t, "association.accepted")
	for i := range 4 {
		if out, err := store(); err != nil {
			t.Fatalf("storescu through HAProxy after edge1 was killed, association %d: %v\n%s", i+1, err, out)
		}
	}
	waitUntil(t, "edge2 took the new associations", func() bool { return edges[1].count(t, "association.accepted") == before+4 })

	// The collector goes away; edge2 keeps working and is restarted while
	// it is away; once the collector is back it holds every record of
	// edge2, in order, none twice.
	e2 := edges[1]
	waitUntil(t, "edge2's backlog delivered", func() bool { return e2.metric(t, "dicomedge_audit_forward_backlog_records") == 0 })
	siemJSON.Stop()
	if out, err := store(); err != nil {
		t.Fatalf("storescu with the collector down: %v\n%s", err, out)
	}
	waitUntil(t, "the backlog shows", func() bool { return e2.metric(t, "dicomedge_audit_forward_backlog_records") > 0 })
	waitUntil(t, "edge2 noticed the outage", func() bool { return strings.Contains(e2.proc.Output(), "records wait in the audit file") })
	e2.stop(t)
	before2 := e2.proc
	e2.start(t, bin)
	// HAProxy marks edge2 up again after two health checks.
	waitUntil(t, "a store through HAProxy after edge2's restart", func() bool { _, err := store(); return err == nil })
	time.Sleep(time.Second) // a few reconnects fail meanwhile
	siemJSON.Restart()
	waitUntil(t, "edge2's backlog delivered after the outage", func() bool {
		return e2.metric(t, "dicomedge_audit_forward_backlog_records") == 0
	})
	recs2, lines2 := e2.records(t)
	got := siemJSON.WaitLines(t, len(lines2))
	var msgs []string
	for _, l := range got {
		parts := strings.SplitN(l, "|", 5)
		if len(parts) != 5 {
			t.Fatalf("stored line %q", l)
		}
		msgs = append(msgs, parts[4])
	}
	// Each process warned once about the outage, however many reconnects
	// failed, and the second said when records got through again.
	const warned = "records wait in the audit file"
	if n1, n2 := strings.Count(before2.Output(), warned), strings.Count(e2.proc.Output(), warned); n1 != 1 || n2 != 1 {
		t.Errorf("outage warnings: %d before the restart, %d after; want one each\n%s\n%s", n1, n2, before2.Output(), e2.proc.Output())
	}
	if !strings.Contains(e2.proc.Output(), "audit collector reachable again") {
		t.Errorf("no recovery logged:\n%s", e2.proc.Output())
	}
	if strings.Join(msgs, "\n") != strings.Join(lines2, "\n") {
		t.Fatalf("JSON collector holds %d messages; edge2's audit file %d records; want the same lines in the same order\ncollector seqs: %v",
			len(msgs), len(recs2), seqsOf(msgs))
	}
}

func seqsOf(lines []string) []any {
	var out []any
	for _, l := range lines {
		var r struct{ Seq any }
		_ = json.Unmarshal([]byte(l), &r)
		out = append(out, r.Seq)
	}
	return out
}

// checkATNAStore finds the ATNA message of the C-STORE request and checks
// what an ATNA repository keys on (DICOM PS3.15 A.5.3.2).
func checkATNAStore(t *testing.T, msgs []string, recs []map[string]any) {
	t.Helper()
	var study string
	for _, r := range recs {
		if r["event"] == "dimse" && r["service"] == "C-STORE" {
			study, _ = r["study_uid"].(string)
		}
	}
	if study == "" {
		t.Fatalf("no C-STORE record with study_uid in the audit file")
	}
	for _, l := range msgs {
		parts := strings.SplitN(l, "|", 5)
		if len(parts) != 5 || parts[1] != "IHE+RFC-3881" {
			t.Fatalf("ATNA message %q", l)
		}
		if !strings.Contains(parts[4], `csd-code="110104"`) { // DICOM Instances Transferred
			continue
		}
		var m struct {
			Participants []struct {
				UserID    string `xml:"UserID,attr"`
				AltUserID string `xml:"AlternativeUserID,attr"`
				UserName  string `xml:"UserName,attr"`
				NAPID     string `xml:"NetworkAccessPointID,attr"`
			} `xml:"ActiveParticipant"`
			Objects []struct {
				ID     string `xml:"ParticipantObjectID,attr"`
				IDType struct {
					Code string `xml:"csd-code,attr"`
				} `xml:"ParticipantObjectIDTypeCode"`
			} `xml:"ParticipantObjectIdentification"`
		}
		if err := xml.Unmarshal([]byte(parts[4]), &m); err != nil {
			t.Fatalf("ATNA XML: %v\n%s", err, parts[4])
		}
		if len(m.Participants) != 2 || m.Participants[0].UserName != "client" || m.Participants[0].AltUserID != "AETITLES=STORESCU" ||
			m.Participants[0].NAPID != "127.0.0.1" || m.Participants[1].AltUserID != "AETITLES=MAINPACS" {
			t.Fatalf("ATNA participants %+v; want the client (CN client, STORESCU, 127.0.0.1) and MAINPACS\n%s", m.Participants, parts[4])
		}
		for _, o := range m.Objects {
			if o.ID == study && o.IDType.Code == "110180" {
				return
			}
		}
		t.Fatalf("ATNA C-STORE message does not name study %s:\n%s", study, parts[4])
	}
	t.Fatalf("no ATNA DICOM Instances Transferred message among %d", len(msgs))
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGetQuiet(url string) (int, string) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}
