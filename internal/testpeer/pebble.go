package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Pebble is Let's Encrypt's test ACME server (Debian's pebble) with real
// challenge validation.
type Pebble struct {
	Directory string // https://127.0.0.1:port/dir
	Mgmt      string // management address: /roots/0
	HTTPSCA   string // PEM file of the CA of Pebble's own HTTPS certificate (ACME ca_roots)
	Proc      *Process
}

// PebbleOptions: where Pebble's validation authority connects and asks.
type PebbleOptions struct {
	TLSPort   int           // TLS-ALPN-01 port on loopback (0: a free port nothing listens on)
	HTTPPort  int           // HTTP-01 port (0: likewise)
	DNSServer string        // host:port Pebble asks for A, AAAA and DNS-01's TXT records (pebble -dnsserver)
	Validity  time.Duration // lifetime of the certificates it issues (0: Pebble's default)
}

// StartPebble runs pebble without random validation sleeps, nonce
// rejections or authorization reuse (a renewal solves a fresh challenge).
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()
	Require(t, "pebble", "openssl")
	if o.TLSPort == 0 {
		o.TLSPort = FreePort(t)
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = FreePort(t)
	}
	https := NewPKI(t, "pebble-https-ca")
	cert, key := https.Issue(t, "pebble", CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true})
	listen, mgmt := FreeAddr(t), FreeAddr(t)
	conf := map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": cert, "privateKey": key,
		"httpPort": o.HTTPPort, "tlsPort": o.TLSPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
	}
	if o.Validity > 0 {
		conf["certificateValidityPeriod"] = int(o.Validity / time.Second)
	}
	b, _ := json.Marshal(map[string]any{"pebble": conf})
	confPath := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", confPath}
	if o.DNSServer != "" {
		args = append(args, "-dnsserver", o.DNSServer)
	}
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	p := Start(t, "pebble", args...)
	WaitListening(t, listen, StartupTimeout, p)
	WaitListening(t, mgmt, StartupTimeout, p)
	return &Pebble{Directory: "https://" + listen + "/dir", Mgmt: mgmt, HTTPSCA: https.CACert, Proc: p}
}

// Issued counts the certificates Pebble has issued so far (its log line
// "Issued certificate serial ... for order ...").
func (p *Pebble) Issued() int { return strings.Count(p.Proc.Output(), "Issued certificate serial") }

// Root fetches the root that signs Pebble's issued certificates (new at
// every start) into a PEM file.
func (p *Pebble) Root(t testing.TB) string {
	t.Helper()
	ca, err := os.ReadFile(p.HTTPSCA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Get("https://" + p.Mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pebble root: %d %v", resp.StatusCode, err)
	}
	path := filepath.Join(t.TempDir(), "pebble-root.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
