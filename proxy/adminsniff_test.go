package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/tlslayer"
)

// TestAdminHTTPAndHTTPSOnOnePort: with the console's client_ca the admin
// listener answers plain HTTP (scrapers keep http://.../metrics) and HTTPS
// (the console, with the browser's client certificate) on the same port,
// and /metrics, /healthz and /readyz are the admin endpoints on both.
func TestAdminHTTPAndHTTPSOnOnePort(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlslayer.InitDevPKI(dir, nil, []string{"admin"}); err != nil {
		t.Fatal(err)
	}
	layer, err := tlslayer.New(context.Background(), tlslayer.Config{ClientCAFiles: []string{filepath.Join(dir, "ca.pem")},
		CertFile: filepath.Join(dir, "edge.pem"), KeyFile: filepath.Join(dir, "edge-key.pem"), PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close()
	tlsCfg, err := layer.AdminConfig("", []string{filepath.Join(dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "no certificate"
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			who = "cert " + r.TLS.VerifiedChains[0][0].Subject.CommonName
		}
		_, _ = io.WriteString(w, "console "+r.URL.Path+" "+who)
	})
	m := NewMetrics()
	a, err := startAdmin("127.0.0.1:0", withConsole(AdminHandler(m, func() bool { return true }), console), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.shutdown(context.Background())
	addr := a.Addr().String()

	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{pair}}}}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	fetch := func(c *http.Client, u string) (int, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		c    *http.Client
		url  string
		code int
		has  string
	}{
		{http.DefaultClient, "http://" + addr + "/healthz", 200, "ok"},
		{http.DefaultClient, "http://" + addr + "/readyz", 200, "ready"},
		{http.DefaultClient, "http://" + addr + "/metrics", 200, "dicomedge_associations_active"},
		{http.DefaultClient, "http://" + addr + "/console/", 200, "console /console/ no certificate"},
		{noCert, "https://" + addr + "/metrics", 200, "dicomedge_associations_active"},
		{noCert, "https://" + addr + "/console/", 200, "console /console/ no certificate"},
		{withCert, "https://" + addr + "/console/audit", 200, "console /console/audit cert admin"},
		{withCert, "https://" + addr + "/healthz", 200, "ok"},
	} {
		code, body := fetch(tc.c, tc.url)
		if code != tc.code || !strings.Contains(body, tc.has) {
			t.Errorf("GET %s: %d %.80q, want %d with %q", tc.url, code, body, tc.code, tc.has)
		}
	}
	// A certificate from another CA does not verify: the handshake fails.
	other := t.TempDir()
	if _, err := tlslayer.InitDevPKI(other, nil, []string{"rogue"}); err != nil {
		t.Fatal(err)
	}
	rogue, _ := tls.LoadX509KeyPair(filepath.Join(other, "rogue.pem"), filepath.Join(other, "rogue-key.pem"))
	rc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{rogue}}}}
	if resp, err := rc.Get("https://" + addr + "/console/"); err == nil {
		resp.Body.Close()
		t.Errorf("a certificate from an unknown CA was accepted: %s", resp.Status)
	}
}

// An admin connection that goes quiet is closed: kept alive after a
// request and then idle, or stopped in the middle of a request's body.
func TestAdminConnectionsTimeOut(t *testing.T) {
	defer func(r, i time.Duration) { adminReadTimeout, adminIdleTimeout = r, i }(adminReadTimeout, adminIdleTimeout)
	adminReadTimeout, adminIdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	a, err := startAdmin("127.0.0.1:0", AdminHandler(NewMetrics(), func() bool { return true }), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.shutdown(context.Background())
	for name, req := range map[string]string{
		"idle after a request": "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"stalled in its body":  "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
	} {
		c, err := net.Dial("tcp", a.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, c) // the answer (if any), then the server's close
		c.Close()
		if err != nil {
			t.Errorf("%s: the connection was not closed by the server: %v", name, err)
		}
	}
}
