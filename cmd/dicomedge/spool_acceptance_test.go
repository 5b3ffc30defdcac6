package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// sfEdge is one edge run by the spool acceptance tests: its directory
// (certificates, policy, spool, audit) outlives restarts.
type sfEdge struct {
	t             *testing.T
	bin, dir      string
	listen, admin string
	config, audit string
	proc          *testpeer.Process
	tlsArgs       []string
}

func newSFEdge(t *testing.T, backends, rules string) *sfEdge {
	t.Helper()
	e := &sfEdge{t: t, bin: buildBinary(t), dir: t.TempDir(), listen: testpeer.FreeAddr(t), admin: testpeer.FreeAddr(t)}
	if out, err := exec.Command(e.bin, "certs", "init", "--dir", filepath.Join(e.dir, "certs"), "--host", "localhost", "--host", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("certs init: %v\n%s", err, out)
	}
	certs := filepath.Join(e.dir, "certs")
	e.tlsArgs = []string{"+tls", filepath.Join(certs, "client-key.pem"), filepath.Join(certs, "client.pem"), "+cf", filepath.Join(certs, "ca.pem")}
	e.config = filepath.Join(e.dir, "policy.hcl")
	e.audit = filepath.Join(e.dir, "audit", "audit.jsonl")
	e.writePolicy(backends, rules)
	return e
}

func (e *sfEdge) writePolicy(backends, rules string) {
	e.t.Helper()
	src := strings.Replace(servePolicy(e.listen, e.admin, backends+"\n"+rules), "audit {", "spool {\n  dir = \"spool\"\n}\naudit {", 1)
	if err := os.WriteFile(e.config, []byte(src), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *sfEdge) start() {
	e.t.Helper()
	e.proc = testpeer.Start(e.t, e.bin, "serve", "--config", e.config, "--log-level", "debug")
	testpeer.WaitListening(e.t, e.listen, 30*time.Second, e.proc)
}

func (e *sfEdge) kill() {
	e.t.Helper()
	_ = e.proc.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-e.proc.Done():
	case <-time.After(20 * time.Second):
		e.t.Fatal("serve did not die on SIGKILL")
	}
}

func (e *sfEdge) cli(args ...string) (int, string) {
	e.t.Helper()
	cmd := exec.Command(e.bin, args...)
	cmd.Dir = e.dir
	out, err := cmd.CombinedOutput()
	return testpeer.ExitCode(err), string(out)
}

// storescu sends files to the edge (called AE called) and returns its
// output; every file must be acknowledged with success.
func (e *sfEdge) storescu(called string, files ...string) (string, error) {
	e.t.Helper()
	ctx := testpeer.Context(e.t, 5*time.Minute)
	args := append(append([]string{"-v"}, e.tlsArgs...), "-aet", "MODALITY1", "-aec", called, testpeer.Host(e.listen), fmt.Sprint(testpeer.Port(e.listen)))
	return testpeer.Run(ctx, "storescu", append(args, files...)...)
}

// records returns the audit records of event, decoded.
func (e *sfEdge) records(event string) []map[string]any {
	f, err := os.Open(e.audit)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

func perInstance(recs []map[string]any) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		if s, _ := r["sop_instance"].(string); s != "" {
			n[s]++
		}
	}
	return n
}

// orthancFiles returns every instance Orthanc stores, as its data set
// (after the File Meta) by SOP Instance UID, fetched through its REST API.
func orthancFiles(t *testing.T, httpAddr string) map[string][]byte {
	t.Helper()
	var ids []string
	getJSON(t, "http://"+httpAddr+"/instances", &ids)
	out := map[string][]byte{}
	for _, id := range ids {
		rsp, err := http.Get("http://" + httpAddr + "/instances/" + id + "/file")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rsp.Body)
		rsp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		ds, uid, err := testpeer.SplitPart10(b)
		if err != nil {
			t.Fatalf("Orthanc instance %s: %v", id, err)
		}
		out[uid] = ds
	}
	return out
}

func orthancCount(httpAddr string) int {
	rsp, err := http.Get("http://" + httpAddr + "/statistics")
	if err != nil {
		return -1
	}
	defer rsp.Body.Close()
	var st struct{ CountInstances int }
	if json.NewDecoder(rsp.Body).Decode(&st) != nil {
		return -1
	}
	return st.CountInstances
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	rsp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	if err := json.NewDecoder(rsp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// compareDelivered checks that Orthanc holds every data set sent, byte for
// byte, and nothing else.
func compareDelivered(t *testing.T, got, sent map[string][]byte) {
	t.Helper()
	if len(got) != len(sent) {
		t.Errorf("Orthanc holds %d instances, %d were sent", len(got), len(sent))
	}
	for uid, ds := range sent {
		g, ok := got[uid]
		switch {
		case !ok:
			t.Errorf("instance %s was lost", uid)
		case !bytes.Equal(g, ds):
			t.Errorf("instance %s differs: %d bytes arrived, %d sent", uid, len(g), len(ds))
		}
	}
}

// The backend PACS is down while a modality sends 200 instances through a
// store-and-forward rule: every one is acknowledged; the edge is killed
// (SIGKILL) in the middle of forwarding once the PACS is back, restarted,
// and every instance arrives byte-identical, none lost, each stored once
// and forwarded at least once in an audit trail that verifies.
// sfRuleHCL stores every association of the test client calling PACS
// and forwards it to backend "pacs".
const sfRuleHCL = `rule "sf" {
  when {
    client_cn = ["client"]
    called_ae = ["PACS"]
  }
  relay {
    backend           = "pacs"
    store_and_forward = true
  }
}`

func TestStoreAndForwardSurvivesOutageAndKill(t *testing.T) {
	testpeer.Require(t, "storescu")
	orthanc := testpeer.StartOrthanc(t, "ORTHANC", nil)
	orthanc.Stop(t) // the PACS is in its maintenance window
	e := newSFEdge(t, fmt.Sprintf(`backend "pacs" {
  address  = %q
  ae_title = "ORTHANC"
}`, orthanc.DICOM), sfRuleHCL)
	e.start()

	const n = 200
	files, sent := testpeer.WriteDICOMFiles(t, filepath.Join(e.dir, "images"), "PAT-SF-1", n, 512, 512)
	out, err := e.storescu("PACS", files...)
	if err != nil {
		t.Fatalf("storescu through the store-and-forward rule: %v\n%s", err, out)
	}
	if got := strings.Count(out, "Received Store Response (Success)"); got != n {
		t.Fatalf("%d of %d C-STOREs acknowledged with success\n%s", got, n, out)
	}
	if got := len(perInstance(e.records("spool.stored"))); got != n {
		t.Fatalf("%d instances audited spool.stored, want %d", got, n)
	}
	// The forwarder keeps trying and says why in spool list.
	waitUntil(t, "spool list shows the refused connection", func() bool {
		_, out := e.cli("spool", "list", "--config", e.config)
		return strings.Contains(out, fmt.Sprintf("pacs     %d", n)) && strings.Contains(out, "connection refused")
	})
	_, listOut := e.cli("spool", "list", "--config", e.config)
	t.Logf("spool list while the PACS is down:\n%s", listOut)

	orthanc.Restart(t)
	// Kill the edge while it forwards: some delivered, not all.
	waitUntil(t, "forwarding under way", func() bool { return len(e.records("spool.forwarded")) >= 5 })
	e.kill()
	delivered := len(e.records("spool.forwarded"))
	if delivered >= n {
		t.Fatalf("all %d instances were delivered before the kill; the test did not kill mid-forwarding", n)
	}
	t.Logf("edge killed with %d of %d instances forwarded", delivered, n)

	e.start()
	waitUntil(t, "every instance in Orthanc", func() bool { return orthancCount(orthanc.HTTP) >= n })
	waitUntil(t, "the queue drained", func() bool {
		_, out := e.cli("spool", "list", "--config", e.config)
		return strings.Contains(out, "pacs     0 ")
	})
	compareDelivered(t, orthancFiles(t, orthanc.HTTP), sent)

	stored, forwarded := perInstance(e.records("spool.stored")), perInstance(e.records("spool.forwarded"))
	for uid := range sent {
		if stored[uid] != 1 {
			t.Errorf("instance %s has %d spool.stored records, want 1", uid, stored[uid])
		}
		if forwarded[uid] < 1 {
			t.Errorf("instance %s has no spool.forwarded record", uid)
		}
	}
	_ = e.proc.Cmd.Process.Signal(syscall.SIGTERM)
	<-e.proc.Done()
	if code, out := e.cli("audit", "verify", "--file", e.audit); code != 0 {
		t.Fatalf("audit verify: exit %d\n%s", code, out)
	}
}

// A full spool answers 0xA700 and takes instances again once the backend
// has drained it; an instance past max_age is moved to expired/ and
// audited; `spool purge` (done by the running edge, which holds the audit
// log) audits what it removes; a de-identified store-and-forward rule
// keeps only the de-identified instance at rest.
func TestStoreAndForwardFullSpoolExpiryPurgeAndDeidentify(t *testing.T) {
	testpeer.Require(t, "storescu")
	orthanc := testpeer.StartOrthanc(t, "ORTHANC", nil)
	orthanc.Stop(t)
	keyFile := filepath.Join(t.TempDir(), "deid.key")
	if err := os.WriteFile(keyFile, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	backends := fmt.Sprintf(`backend "pacs" {
  address  = %q
  ae_title = "ORTHANC"
}
deidentify "research" {
  key_file  = %q
  burned_in = "pass" # the test images are Secondary Capture without Burned In Annotation
}`, orthanc.DICOM, keyFile)
	rules := `rule "sf" {
  when {
    client_cn = ["client"]
    called_ae = ["PACS"]
  }
  relay {
    backend           = "pacs"
    store_and_forward = true
  }
}
rule "sf-deid" {
  when {
    client_cn = ["client"]
    called_ae = ["RESEARCH"]
  }
  relay {
    backend           = "pacs"
    store_and_forward = true
    deidentify        = "research"
  }
}`
	e := newSFEdge(t, backends, rules)
	src, _ := os.ReadFile(e.config)
	// Room for two 256 KiB instances, not three; expiry after 4 s.
	src = bytes.Replace(src, []byte(`dir = "spool"`), []byte("dir      = \"spool\"\n  max_size = \"600KiB\"\n  max_age  = \"4s\""), 1)
	if err := os.WriteFile(e.config, src, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	files, sent := testpeer.WriteDICOMFiles(t, filepath.Join(e.dir, "images"), "PAT-FULL-1", 4, 256, 512)

	for i := range 2 {
		if out, err := e.storescu("PACS", files[i]); err != nil || !strings.Contains(out, "Received Store Response (Success)") {
			t.Fatalf("instance %d into the spool: %v\n%s", i, err, out)
		}
	}
	out, _ := e.storescu("PACS", files[2])
	if !strings.Contains(out, "OutOfResources") && !strings.Contains(out, "0xa700") {
		t.Fatalf("a C-STORE into the full spool was not answered 0xA700:\n%s", out)
	}
	// The backend comes back and drains the spool: the edge takes
	// instances again.
	orthanc.Restart(t)
	waitUntil(t, "the spool drained into Orthanc", func() bool { return orthancCount(orthanc.HTTP) == 2 })
	if out, err := e.storescu("PACS", files[2]); err != nil || !strings.Contains(out, "Received Store Response (Success)") {
		t.Fatalf("after draining the spool still refuses: %v\n%s", err, out)
	}
	waitUntil(t, "the third instance in Orthanc", func() bool { return orthancCount(orthanc.HTTP) == 3 })
	got := orthancFiles(t, orthanc.HTTP)
	for _, f := range files[:3] {
		b, _ := os.ReadFile(f)
		_, uid, _ := testpeer.SplitPart10(b)
		if !bytes.Equal(got[uid], sent[uid]) {
			t.Errorf("instance %s did not arrive byte-identical", uid)
		}
	}
	orthanc.Stop(t)

	// De-identified: what the spool keeps has none of the original
	// patient's identity.
	if out, err := e.storescu("RESEARCH", files[3]); err != nil || !strings.Contains(out, "Received Store Response (Success)") {
		t.Fatalf("de-identified store-and-forward: %v\n%s", err, out)
	}
	queued, _ := filepath.Glob(filepath.Join(e.dir, "spool", "pacs", "queue", "*.dcm"))
	if len(queued) != 1 {
		t.Fatalf("queue holds %d files, want the de-identified instance", len(queued))
	}
	b, err := os.ReadFile(queued[0])
	if err != nil {
		t.Fatal(err)
	}
	_, origUID, _ := testpeer.SplitPart10(mustRead(t, files[3]))
	if bytes.Contains(b, []byte("PAT-FULL-1")) || bytes.Contains(b, []byte(origUID)) {
		t.Fatalf("the spooled instance still holds the original Patient ID or SOP Instance UID")
	}
	for _, fn := range []string{queued[0], filepath.Dir(queued[0])} {
		if fi, _ := os.Stat(fn); fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %v: the spool must be private (0600/0700)", fn, fi.Mode().Perm())
		}
	}

	// Expiry: past max_age the instance moves to expired/, audited.
	waitUntil(t, "spool.expired", func() bool { return len(e.records("spool.expired")) == 1 })
	if x, _ := filepath.Glob(filepath.Join(e.dir, "spool", "pacs", "expired", "*.dcm")); len(x) != 1 {
		t.Fatalf("expired/ holds %d files, want 1", len(x))
	}
	// Purge while the edge runs: the edge does it and audits it.
	code, out := e.cli("spool", "purge", "--config", e.config, "--backend", "pacs")
	if code != 0 || !strings.Contains(out, "1 instances purged") {
		t.Fatalf("spool purge: exit %d\n%s", code, out)
	}
	if n := len(e.records("spool.purged")); n != 1 {
		t.Fatalf("%d spool.purged records, want 1", n)
	}
	_ = e.proc.Cmd.Process.Signal(syscall.SIGTERM)
	<-e.proc.Done()
	if code, out := e.cli("audit", "verify", "--file", e.audit); code != 0 {
		t.Fatalf("audit verify: exit %d\n%s", code, out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A DICOMweb destination: Orthanc with its DICOMweb plugin behind an
// HTTPS gate (HAProxy: TLS with a client certificate required, and a
// bearer token checked, 401 otherwise). Instances sent by storescu reach
// it by STOW-RS byte-identical; while the token file holds a token the
// gate refuses, they stay queued with the reason in `spool list`, and they
// go once the file is fixed, without a reload.
func TestDICOMwebDestinationThroughTLSAndBearerToken(t *testing.T) {
	testpeer.Require(t, "storescu")
	orthanc := testpeer.StartOrthancDICOMweb(t, "ORTHANC")
	e := newSFEdge(t, "", "")
	certs := filepath.Join(e.dir, "certs")
	gatePEM := filepath.Join(e.dir, "gate.pem")
	if err := os.WriteFile(gatePEM, append(mustRead(t, filepath.Join(certs, "edge.pem")), mustRead(t, filepath.Join(certs, "edge-key.pem"))...), 0o600); err != nil {
		t.Fatal(err)
	}
	_, gate := testpeer.StartHTTPSGate(t, orthanc.HTTP, gatePEM, filepath.Join(certs, "ca.pem"), "good-token-1")
	tokenFile := filepath.Join(e.dir, "cloud.token")
	if err := os.WriteFile(tokenFile, []byte("expired-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.writePolicy(fmt.Sprintf(`backend "cloud" {
  dicomweb {
    url        = "https://%s/dicom-web"
    ca         = ["certs/ca.pem"]
    cert_file  = "certs/client.pem"
    key_file   = "certs/client-key.pem"
    token_file = "cloud.token"
  }
}`, gate), `rule "to-cloud" {
  when {
    client_cn = ["client"]
    called_ae = ["CLOUD"]
  }
  relay { backend = "cloud" }
}`)
	e.start()

	const n = 40
	files, sent := testpeer.WriteDICOMFiles(t, filepath.Join(e.dir, "images"), "PAT-WEB-1", n, 128, 128)
	out, err := e.storescu("CLOUD", files...)
	if err != nil || strings.Count(out, "Received Store Response (Success)") != n {
		t.Fatalf("storescu to the DICOMweb rule: %v\n%s", err, out)
	}
	waitUntil(t, "spool list shows the refused token", func() bool {
		_, out := e.cli("spool", "list", "--config", e.config, "--backend", "cloud")
		return strings.Contains(out, fmt.Sprintf("cloud    %d", n)) && strings.Contains(out, "HTTP 401")
	})
	_, listOut := e.cli("spool", "list", "--config", e.config)
	t.Logf("spool list with a refused token:\n%s", listOut)
	if c := orthancCount(orthanc.HTTP); c != 0 {
		t.Fatalf("Orthanc holds %d instances although the gate refused the token", c)
	}
	if len(e.records("spool.failed")) != 0 {
		t.Fatal("a refused token moved instances to failed/; they must stay queued")
	}

	// A sidecar refreshes the token: the next attempt uses it.
	if err := os.WriteFile(tokenFile, []byte("good-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every instance in Orthanc", func() bool { return orthancCount(orthanc.HTTP) >= n })
	waitUntil(t, "the queue drained", func() bool {
		_, out := e.cli("spool", "list", "--config", e.config, "--backend", "cloud")
		return strings.Contains(out, "cloud    0 ")
	})
	compareDelivered(t, orthancFiles(t, orthanc.HTTP), sent)
	forwarded := perInstance(e.records("spool.forwarded"))
	for uid := range sent {
		if forwarded[uid] != 1 {
			t.Errorf("instance %s: %d spool.forwarded records, want 1", uid, forwarded[uid])
		}
	}
}

// The forwarder speaks TLS to a backend whose tls block says so: Orthanc
// with its own DICOM TLS, requiring the edge's client certificate.
func TestStoreAndForwardToTLSBackend(t *testing.T) {
	testpeer.Require(t, "storescu")
	e := newSFEdge(t, "", "")
	certs := filepath.Join(e.dir, "certs")
	orthanc := testpeer.StartOrthancTLS(t, "ORTHANC", filepath.Join(certs, "edge.pem"), filepath.Join(certs, "edge-key.pem"), filepath.Join(certs, "ca.pem"))
	e.writePolicy(fmt.Sprintf(`backend "pacs" {
  address  = %q
  ae_title = "ORTHANC"
  tls {
    ca        = ["certs/ca.pem"]
    cert_file = "certs/client.pem"
    key_file  = "certs/client-key.pem"
  }
}`, orthanc.DICOM), sfRuleHCL)
	e.start()
	files, sent := testpeer.WriteDICOMFiles(t, filepath.Join(e.dir, "images"), "PAT-TLS-1", 5, 64, 64)
	if out, err := e.storescu("PACS", files...); err != nil || strings.Count(out, "Received Store Response (Success)") != 5 {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	waitUntil(t, "every instance in Orthanc over TLS", func() bool { return orthancCount(orthanc.HTTP) >= 5 })
	compareDelivered(t, orthancFiles(t, orthanc.HTTP), sent)
}
