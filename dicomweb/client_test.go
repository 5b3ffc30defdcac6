package dicomweb

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dicomedge/dicomedge/spool"
)

// stowServer is an in-process STOW-RS endpoint and OAuth2 token endpoint
// for the client's own unit tests (the real DICOMweb peer, Orthanc, is in
// cmd/dicomedge's acceptance tests): it checks what the client sends.
type stowServer struct {
	mu       sync.Mutex
	token    string // the bearer token it accepts
	received []string
	auths    []string
	issued   int
}

func (s *stowServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/oauth/token":
		id, secret, ok := r.BasicAuth()
		if r.FormValue("grant_type") != "client_credentials" || !ok || id != "edge" || secret != "s3cret" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		s.issued++
		s.token = fmt.Sprintf("issued-%d", s.issued)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, s.token)
	case "/dicomweb/studies":
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer "+s.token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/related" || params["type"] != "application/dicom" {
			http.Error(w, "bad content type", http.StatusUnsupportedMediaType)
			return
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		var refs []string
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil || p.Header.Get("Content-Type") != "application/dicom" {
				http.Error(w, "bad part", http.StatusBadRequest)
				return
			}
			b, _ := io.ReadAll(p)
			fm, err := spool.ReadFileMeta(strings.NewReader(string(b)))
			if err != nil || fm.Meta != nil {
				http.Error(w, "not a public Part 10 file", http.StatusBadRequest)
				return
			}
			s.received = append(s.received, fm.SOPInstance)
			refs = append(refs, fmt.Sprintf(`{"00081155":{"vr":"UI","Value":[%q]}}`, fm.SOPInstance))
		}
		w.Header().Set("Content-Type", "application/dicom+json")
		fmt.Fprintf(w, `{"00081199":{"vr":"SQ","Value":[%s]}}`, strings.Join(refs, ","))
	default:
		http.NotFound(w, r)
	}
}

func startStow(t *testing.T) (*stowServer, *httptest.Server, string) {
	t.Helper()
	s := &stowServer{}
	ts := httptest.NewTLSServer(s)
	t.Cleanup(ts.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s, ts, ca
}

func spooled(t *testing.T, n int) []*spool.Entry {
	t.Helper()
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(t.TempDir(), "spool")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	for i := range n {
		w, err := sp.Create("cloud", spool.Meta{SOPClass: "1.2.840.10008.5.1.4.1.1.7", SOPInstance: fmt.Sprintf("2.25.9.%d", i),
			TransferSyntax: "1.2.840.10008.1.2.1", CallingAE: "MODALITY", Client: "sha256:ab"})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte{0x08, 0x00, 0x18, 0x00, 'U', 'I', 2, 0, '1', 0})
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	list, err := sp.List("cloud", spool.Queued)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*spool.Entry, len(list))
	for i := range list {
		out[i] = &list[i]
	}
	return out
}

func TestOAuth2ClientCredentialsAndPublicFileMeta(t *testing.T) {
	srv, ts, ca := startStow(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca},
		OAuth2: &OAuth2{TokenURL: ts.URL + "/oauth/token", ClientID: "edge", ClientSecretFile: secret, Scopes: []string{"dicom.write"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := spooled(t, 3)
	for i, err := range s.Send(context.Background(), batch) {
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	if len(srv.received) != 3 || srv.issued != 1 {
		t.Fatalf("server received %v with %d tokens issued", srv.received, srv.issued)
	}
	// The token is reused until it expires.
	s.Send(context.Background(), batch[:1])
	if srv.issued != 1 {
		t.Errorf("a second request fetched a new token (%d issued)", srv.issued)
	}
}

func TestTokenFileIsReadAgainWhenItChanges(t *testing.T) {
	srv, ts, ca := startStow(t)
	srv.token = "good"
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("stale\n"), 0o600)
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca}, TokenFile: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := spooled(t, 2)
	errs := s.Send(context.Background(), batch)
	if errs[0] == nil || spool.IsPermanent(errs[0]) || !strings.Contains(errs[0].Error(), "401") {
		t.Fatalf("a refused token: %v, want a transient 401", errs[0])
	}
	os.WriteFile(tok, []byte("good\n"), 0o600)
	for i, err := range s.Send(context.Background(), batch) {
		if err != nil {
			t.Fatalf("instance %d after the token was fixed: %v", i, err)
		}
	}
	if got := srv.auths; len(got) != 2 || got[0] != "Bearer stale" || got[1] != "Bearer good" {
		t.Errorf("Authorization headers %q", got)
	}
}

func TestOnlyHTTPS(t *testing.T) {
	if _, err := New(Config{URL: "http://dicom.example.org"}); err == nil {
		t.Fatal("an http:// URL was accepted")
	}
}

// A service that refuses the request's size (413) gets smaller requests;
// the instances are kept, not failed, and go in the smaller batches.
func TestTooLargeRequestsShrinkTheBatch(t *testing.T) {
	srv, ts, ca := startStow(t)
	srv.token = "t"
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t"), 0o600)
	limited := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 2000 {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		srv.ServeHTTP(w, r)
	})
	ts.Config.Handler = limited
	s, err := New(Config{Name: "cloud", URL: ts.URL + "/dicomweb", CA: []string{ca}, TokenFile: tok, Batch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := spooled(t, 8)
	errs := s.Send(context.Background(), batch)
	if errs[0] == nil || spool.IsPermanent(errs[0]) {
		t.Fatalf("413 on a batch: %v, want transient", errs[0])
	}
	if n, _ := s.Batch(); n != 4 {
		t.Fatalf("batch after 413: %d, want 4", n)
	}
	for len(batch) > 0 {
		n, _ := s.Batch()
		n = min(n, len(batch))
		errs := s.Send(context.Background(), batch[:n])
		if errs[0] != nil && spool.IsPermanent(errs[0]) {
			t.Fatalf("instances failed for good: %v", errs[0])
		}
		if errs[0] == nil {
			batch = batch[n:]
		}
	}
	if len(srv.received) != 8 {
		t.Errorf("received %d instances, want 8", len(srv.received))
	}
}
