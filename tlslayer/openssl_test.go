package tlslayer

import (
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// TestOpenSSLClientProfiles: an independent TLS stack (openssl s_client)
// offering only what the default profile forbids is refused, and the
// refusal is classified; offering what it allows succeeds.
func TestOpenSSLClientProfiles(t *testing.T) {
	testpeer.Require(t, "openssl")
	f := newFixture(t, false)
	cert, key := f.pki.Issue(t, "client", testpeer.CertOptions{CN: "s-client"})
	srv := startServer(t, newLayerT(t, f.config()), 5*time.Second)
	common := []string{"s_client", "-connect", srv.addr, "-cert", cert, "-key", key, "-CAfile", f.pki.CACert, "-verify_return_error"}
	cases := []struct {
		name   string
		args   []string
		reason string
	}{
		{"TLS 1.3", []string{"-tls1_3"}, ""},
		{"TLS 1.2 ECDHE-ECDSA AES-GCM", []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"}, ""},
		// SECLEVEL=0 lets OpenSSL 3 offer TLS 1.1 at all.
		{"TLS 1.1 only", []string{"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"}, ReasonProtocolVersion},
		{"TLS 1.2 CBC suites only", []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"}, ReasonNoCipherSuite},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string(nil), common...), tc.args...)
			out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), "openssl", args...)
			r := srv.next(t)
			if tc.reason == "" {
				if r.err != nil || r.id.CN != "s-client" {
					t.Fatalf("server: %+v\n%s", r, testpeer.Describe("openssl", args, out))
				}
				if !strings.Contains(out, "Verify return code: 0") {
					t.Fatalf("s_client did not verify the edge\n%s", testpeer.Describe("openssl", args, out))
				}
				return
			}
			if err == nil && r.err == nil {
				t.Fatalf("accepted\n%s", testpeer.Describe("openssl", args, out))
			}
			if got := Classify(r.err); got != tc.reason {
				t.Fatalf("reason %q (%v), want %q\n%s", got, r.err, tc.reason, testpeer.Describe("openssl", args, out))
			}
		})
	}
}

// An independent TLS stack resumes too: openssl s_client saves the session
// (its ticket) from the first connection and offers it on the second, and
// the server hands out the same client identity both times.
func TestOpenSSLClientResumes(t *testing.T) {
	testpeer.Require(t, "openssl")
	f := newFixture(t, false)
	cert, key := f.pki.Issue(t, "client", testpeer.CertOptions{CN: "s-client"})
	srv := startServer(t, newLayerT(t, f.config()), 5*time.Second)
	sess := filepath.Join(t.TempDir(), "session.pem")
	common := []string{"s_client", "-connect", srv.addr, "-cert", cert, "-key", key, "-CAfile", f.pki.CACert,
		"-verify_return_error", "-tls1_3"}
	run := func(extra ...string) (string, result) {
		args := append(append([]string(nil), common...), extra...)
		// The input ends only after a pause, so that s_client has received
		// the session ticket the server sends after the handshake.
		cmd := exec.CommandContext(testpeer.Context(t, 30*time.Second), "openssl", args...)
		pr, pw := io.Pipe()
		cmd.Stdin = pr
		go func() {
			_, _ = pw.Write([]byte("ping\n"))
			time.Sleep(500 * time.Millisecond)
			pw.Close()
		}()
		out, _ := cmd.CombinedOutput()
		return string(out), srv.next(t)
	}
	out, first := run("-sess_out", sess)
	if first.err != nil || first.id.CN != "s-client" {
		t.Fatalf("first session: %+v\n%s", first, out)
	}
	out, second := run("-sess_in", sess)
	if !strings.Contains(out, "Reused, TLSv1.3") {
		t.Fatalf("s_client did not resume\n%s", out)
	}
	if second.err != nil || second.id.Fingerprint != first.id.Fingerprint {
		t.Fatalf("resumed session: %+v, want the identity of the first %+v", second, first.id)
	}
}
