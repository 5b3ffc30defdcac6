package dicomweb

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/spool"
)

// testPKI is a CA made for one test, issuing server certificates for the
// names given.
type testPKI struct {
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	f := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return &testPKI{ca: ca, key: key, caFile: f}
}

func (p *testPKI) issue(t *testing.T, dns []string, ips []net.IP, client bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	eku := x509.ExtKeyUsageServerAuth
	if client {
		eku = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: "leaf"}, DNSNames: dns, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves h over TLS with cert, asking for (not requiring) a
// client certificate.
func tlsServer(t *testing.T, cert tls.Certificate, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

func writeSecret(t *testing.T, s string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(f, []byte(s), 0o600)
	return f
}

// An authorization server on a host other than the DICOMweb service's is
// the common case (an identity provider). Its certificate is checked for
// its own name, not the service's, and the edge's client certificate,
// meant for the service, is not presented to it.
func TestOAuth2TokenEndpointOnAnotherHost(t *testing.T) {
	pki := newPKI(t)
	srv := &stowServer{}
	var mu sync.Mutex
	var presented int
	idp := tlsServer(t, pki.issue(t, []string{"localhost"}, nil, false), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		presented += len(r.TLS.PeerCertificates)
		mu.Unlock()
		srv.ServeHTTP(w, r)
	}))
	stow := tlsServer(t, pki.issue(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)}, false), srv)
	_, idpPort, _ := net.SplitHostPort(idp.Listener.Addr().String())
	dir := t.TempDir()
	client := pki.issue(t, nil, nil, true)
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: client.Certificate[0]}), 0o600)
	kb, _ := x509.MarshalPKCS8PrivateKey(client.PrivateKey)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	s, err := New(Config{Name: "cloud", URL: stow.URL + "/dicomweb", CA: []string{pki.caFile}, CertFile: certFile, KeyFile: keyFile,
		OAuth2: &OAuth2{TokenURL: "https://localhost:" + idpPort + "/oauth/token", ClientID: "edge", ClientSecretFile: writeSecret(t, "s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, err := range s.Send(context.Background(), spooled(t, 2)) {
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	if srv.issued != 1 {
		t.Errorf("%d tokens issued, want 1", srv.issued)
	}
	if presented != 0 {
		t.Error("the client certificate for the DICOMweb service was presented to the authorization server")
	}
}

// A token endpoint that redirects (a load balancer, a moved endpoint, or
// a hostile one) must not get the client secret re-sent elsewhere, least
// of all over plain http.
func TestOAuth2TokenRequestDoesNotFollowRedirects(t *testing.T) {
	var mu sync.Mutex
	var leaked []string
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		leaked = append(leaked, r.Header.Get("Authorization")+" "+string(b))
		mu.Unlock()
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
	}))
	defer plain.Close()
	_, ts, ca := startStow(t)
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/steal", http.StatusTemporaryRedirect)
	})
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca},
		OAuth2: &OAuth2{TokenURL: ts.URL + "/oauth/token", ClientID: "edge", ClientSecretFile: writeSecret(t, "s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errs := s.Send(context.Background(), spooled(t, 1))
	if errs[0] == nil || spool.IsPermanent(errs[0]) {
		t.Errorf("a redirecting token endpoint: %v, want a transient error", errs[0])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) > 0 {
		t.Errorf("the token request followed the redirect to plain http: %q", leaked)
	}
}

// The token endpoint's error page is its own text: it must not reach the
// spool's last error (shown by `spool list`) at any length, nor with its
// control characters.
func TestOAuth2ErrorBodyIsNotCopiedIntoTheError(t *testing.T) {
	_, ts, ca := startStow(t)
	page := "\x1b]0;pwned\x07\x1b[2J" + strings.Repeat("A", 512<<10)
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, page)
	})
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca},
		OAuth2: &OAuth2{TokenURL: ts.URL + "/oauth/token", ClientID: "edge", ClientSecretFile: writeSecret(t, "s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Send(context.Background(), spooled(t, 1))[0]
	if err == nil || spool.IsPermanent(err) {
		t.Fatalf("token endpoint answering 502: %v, want transient", err)
	}
	msg := err.Error()
	if len(msg) > 1024 || strings.ContainsAny(msg, "\x1b\x07") {
		t.Errorf("error of %d bytes carries the token endpoint's page: %.200q", len(msg), msg)
	}
	if !strings.Contains(msg, "502") {
		t.Errorf("error %q does not say what the token endpoint answered", msg)
	}
}

// A redirect from the STOW-RS endpoint is not followed (it would carry the
// credentials elsewhere), and says nothing about the instances: they stay
// queued until the url is fixed, rather than every queued instance being
// moved to failed/.
func TestSTOWRedirectKeepsTheInstancesQueued(t *testing.T) {
	_, ts, ca := startStow(t)
	var hits int
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.Redirect(w, r, "https://example.org/elsewhere", http.StatusFound)
	})
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, err := range s.Send(context.Background(), spooled(t, 3)) {
		if err == nil || spool.IsPermanent(err) {
			t.Errorf("instance %d after a 302: %v, want transient", i, err)
		}
	}
	if hits != 1 {
		t.Errorf("%d requests", hits)
	}
	_ = fmt.Sprint
}

// A 202 says some instances were not stored. Only those its Referenced SOP
// Sequence names are known stored: one it does not name (the body cut, over
// the read limit, not DICOM JSON, or simply silent about it) is sent
// again, not removed from the spool as delivered.
func TestAcceptedResponseDeliversOnlyWhatItNames(t *testing.T) {
	_, ts, ca := startStow(t)
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/dicom+json")
		w.WriteHeader(http.StatusAccepted)
		// Referenced SOP Sequence for 2.25.9.0, then a Failed SOP
		// Sequence the client never reads whole.
		fmt.Fprintf(w, `{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["2.25.9.0"]}}]},"00081198":{"vr":"SQ","Value":[`)
		for range maxResponse / 64 {
			io.WriteString(w, `{"00081155":{"vr":"UI","Value":["2.25.9.1"]},"00081197":{"vr":"US","Value":[49152]}},`)
		}
	})
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errs := s.Send(context.Background(), spooled(t, 2))
	if errs[1] == nil {
		t.Error("an instance a 202 did not name as stored was taken as delivered")
	} else if spool.IsPermanent(errs[1]) {
		t.Errorf("an instance a 202 did not name: %v, want transient (sent again)", errs[1])
	}
	// Parsed whole, a 202 still delivers only the instances it names.
	r := Classify(202, []byte(`{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["2.25.1"]}}]}}`))
	if err := r.For("2.25.1"); err != nil {
		t.Errorf("named stored: %v", err)
	}
	if err := r.For("2.25.2"); err == nil || spool.IsPermanent(err) {
		t.Errorf("unnamed in a 202: %v, want transient", err)
	}
}

// A large instance over a slow link takes longer to upload than any fixed
// bound on the whole request: as long as the upload moves, it goes on
// (else such an instance is cut off and sent again forever, holding up
// the queue behind it until max_age). A stalled upload is still cut off.
func TestSlowButMovingUploadIsNotCutOff(t *testing.T) {
	oldReq, oldStall := requestTimeout, stallTimeout
	requestTimeout, stallTimeout = time.Second, 500*time.Millisecond
	t.Cleanup(func() { requestTimeout, stallTimeout = oldReq, oldStall })
	_, ts, ca := startStow(t)
	stall := make(chan struct{})
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 128<<10)
		for {
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				break
			}
			select {
			case <-stall:
				// Reads nothing more (the request's context ends only
				// once its body is read).
				time.Sleep(3 * time.Second)
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		w.Header().Set("Content-Type", "application/dicom+json")
		io.WriteString(w, `{}`)
	})
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := spooled(t, 1)
	f, err := os.OpenFile(batch[0].Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 16<<20))
	f.Close()
	start := time.Now()
	if err := s.Send(context.Background(), batch)[0]; err != nil {
		t.Fatalf("an upload that kept moving for %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	close(stall)
	start = time.Now()
	err = s.Send(context.Background(), batch)[0]
	if err == nil || spool.IsPermanent(err) {
		t.Fatalf("a stalled upload: %v, want transient", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a stalled upload was cut off after %v", d)
	}
}

// A service that refuses a whole request of several instances for one of
// them (409, 400, often without saying which) refuses nothing about the
// others: they are sent again one by one, and only the instance refused
// on its own goes to failed/.
func TestRefusedBatchIsSortedOutInstanceByInstance(t *testing.T) {
	_, ts, ca := startStow(t)
	for _, named := range []bool{false, true} {
		ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if strings.Contains(string(b), "2.25.9.1") {
				w.WriteHeader(http.StatusConflict)
				if named {
					io.WriteString(w, `{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["2.25.9.1"]},"00081197":{"vr":"US","Value":[43264]}}]}}`)
				}
				return
			}
			w.Header().Set("Content-Type", "application/dicom+json")
			io.WriteString(w, `{}`)
		})
		s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca}})
		if err != nil {
			t.Fatal(err)
		}
		errs := s.Send(context.Background(), spooled(t, 3))
		s.Close()
		if errs[1] == nil || !spool.IsPermanent(errs[1]) {
			t.Errorf("named %v: the refused instance: %v, want permanent", named, errs[1])
		}
		for _, i := range []int{0, 2} {
			if errs[i] != nil && spool.IsPermanent(errs[i]) {
				t.Errorf("named %v: instance %d, refused with another's request: %v, want delivered or sent again", named, i, errs[i])
			}
		}
	}
}

// An instance the response lists as failed is not delivered, whatever the
// HTTP status: even when the service pads its UID (as in binary DICOM),
// or lists a failure without saying which instance it is about.
func TestFailedSOPSequenceIsNotMissed(t *testing.T) {
	padded := Classify(200, []byte(`{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["2.25.1\u0000"]},"00081197":{"vr":"US","Value":[272]}}]}}`))
	if err := padded.For("2.25.1"); err == nil || !spool.IsPermanent(err) {
		t.Errorf("a padded UID in the Failed SOP Sequence: %v, want permanent", err)
	}
	anon := Classify(200, []byte(`{"00081198":{"vr":"SQ","Value":[{"00081197":{"vr":"US","Value":[272]}}]},
		"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["2.25.2"]}}]}}`))
	if err := anon.For("2.25.1"); err == nil || spool.IsPermanent(err) {
		t.Errorf("a failure naming no instance: %v, want transient (sent again)", err)
	}
	if err := anon.For("2.25.2"); err != nil {
		t.Errorf("an instance named stored beside it: %v", err)
	}
}

// A service that refuses an access token before its expires_in (revoked,
// keys rotated) gets a new one on the next attempt: the edge does not keep
// presenting the refused token, and the queue waiting, until it expires.
func TestRefusedAccessTokenIsFetchedAgain(t *testing.T) {
	srv, ts, ca := startStow(t)
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca},
		OAuth2: &OAuth2{TokenURL: ts.URL + "/oauth/token", ClientID: "edge", ClientSecretFile: writeSecret(t, "s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := spooled(t, 1)
	if err := s.Send(context.Background(), batch)[0]; err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.token = "revoked" // issued-1 is no longer accepted
	srv.mu.Unlock()
	if err := s.Send(context.Background(), batch)[0]; err == nil || spool.IsPermanent(err) {
		t.Fatalf("a revoked token: %v, want a transient 401", err)
	}
	if err := s.Send(context.Background(), batch)[0]; err != nil {
		t.Fatalf("after a 401, the next attempt still fails: %v (%d tokens issued, headers %q)", err, srv.issued, srv.auths)
	}
}

// Shutdown and reload stop the forwarder through the context of Send: a
// token endpoint that never answers does not hold them for the token
// request's own time bound.
func TestSilentTokenEndpointDoesNotHoldShutdown(t *testing.T) {
	_, ts, ca := startStow(t)
	release := make(chan struct{})
	defer close(release)
	ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca},
		OAuth2: &OAuth2{TokenURL: ts.URL + "/oauth/token", ClientID: "edge", ClientSecretFile: writeSecret(t, "s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Send(ctx, spooled(t, 1))[0]
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send returned %v after its context ended (%v)", d, err)
	}
	if err == nil {
		t.Error("delivered without a token")
	}
}
