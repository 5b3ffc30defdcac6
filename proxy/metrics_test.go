package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// scrape returns every sample of /metrics as "name{labels}" → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	testpeer.Require(t, "echoscu")
	e := startEdge(t, edgeOptions{AdminListen: true})
	base := "http://" + e.Server.AdminAddr().String()
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s, want 200 with listener, certificate and policy loaded", code, body)
	}
	before := scrape(t, base+"/metrics")
	if before[`dicomedge_certificate_expiry_timestamp_seconds`] < float64(time.Now().Unix()) {
		t.Errorf("certificate expiry = %v, want a future Unix time", before[`dicomedge_certificate_expiry_timestamp_seconds`])
	}
	// The TLS failure series exist before the first failure (a baseline for alerts).
	for _, name := range []string{"dicomedge_associations_active", "dicomedge_audit_queue_depth", "dicomedge_audit_dropped_total",
		`dicomedge_tls_handshake_failures_total{reason="unknown-ca"}`, `dicomedge_tls_handshake_failures_total{reason="revoked"}`} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}

	p := e.pki
	for i := 0; i < 2; i++ {
		if out, err := e.dcmtk(t, "echoscu", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port()); err != nil {
			t.Fatalf("echoscu: %v\n%s", err, out)
		}
	}
	_, _ = e.dcmtkAs(t, p.otherCert, p.otherKey, "echoscu", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port())
	_, _ = e.dcmtkAs(t, p.rogueCert, p.rogueKey, "echoscu", "-aet", "MODALITY1", "-aec", "DICOMEDGE", e.host(), e.port())
	e.waitEvent(t, "tls.failed", func(ev audit.Event) bool { return ev.Event == audit.EventTLSFailed })
	// The edge counts a reject after writing the RJ, so echoscu may be gone
	// before the counter moves; the audit record comes after the counter.
	e.waitEvent(t, "rejected", func(ev audit.Event) bool { return ev.Event == audit.EventRejected })
	e.waitEvent(t, "second release", func(ev audit.Event) bool { return ev.Event == audit.EventReleased && ev.Seq > 5 })

	after := scrape(t, base+"/metrics")
	checks := []struct {
		sample string
		delta  float64
	}{
		{`dicomedge_associations_total{decision="answer",rule="echo"}`, 2},
		{`dicomedge_associations_total{decision="reject",rule="deny"}`, 1},
		{`dicomedge_tls_handshake_failures_total{reason="unknown-ca"}`, 1},
		{`dicomedge_dimse_requests_total{service="C-ECHO",status_class="success"}`, 2},
	}
	for _, c := range checks {
		if got := after[c.sample] - before[c.sample]; got != c.delta {
			t.Errorf("%s moved by %v, want %v", c.sample, got, c.delta)
		}
	}
	for _, dir := range []string{"in", "out"} {
		s := `dicomedge_relay_bytes_total{direction="` + dir + `"}`
		if after[s] <= before[s] {
			t.Errorf("%s did not move (%v → %v)", s, before[s], after[s])
		}
	}
	if after["dicomedge_associations_active"] != 0 {
		t.Errorf("associations_active = %v after all ended", after["dicomedge_associations_active"])
	}
}

func TestReadyzBeforeServe(t *testing.T) {
	s := &Server{}
	if s.Ready() {
		t.Fatal("a server with no listener, config or certificate reports ready")
	}
}
