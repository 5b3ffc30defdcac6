package tlslayer

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// PS3.8 9.3: PDU types and the A-ASSOCIATE-RJ fields this responder uses.
const (
	pduAssociateRQ       = 0x01
	pduAssociateRJ       = 0x03
	rjResultPermanent    = 1 // PS3.8 9.3.4: rejected-permanent
	rjSourceServiceUser  = 1 // DICOM UL service-user
	rjReasonCallingAENot = 3 // calling-ae-not-recognized (source 1)
	maxTestPDU           = 64 << 10
)

// rejectAssociation reads one A-ASSOCIATE-RQ (6-byte header, bounded body)
// and answers A-ASSOCIATE-RJ: enough DICOM to prove that a real DICOM client
// speaks through the TLS layer, and nothing this package should own.
func rejectAssociation(c net.Conn) (calling string, err error) {
	var hdr [6]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", err
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	if hdr[0] != pduAssociateRQ || n < 68 || n > maxTestPDU {
		return "", fmt.Errorf("not an A-ASSOCIATE-RQ: type %#x length %d", hdr[0], n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c, body); err != nil {
		return "", err
	}
	// Body: protocol version (2), reserved (2), called AE (16), calling AE (16).
	calling = strings.TrimSpace(string(body[20:36]))
	rj := []byte{pduAssociateRJ, 0, 0, 0, 0, 4, 0, rjResultPermanent, rjSourceServiceUser, rjReasonCallingAENot}
	_, err = c.Write(rj)
	return calling, err
}

func TestDCMTKEchoscuHandshake(t *testing.T) {
	testpeer.Require(t, "echoscu", "openssl")
	cases := []struct {
		name    string
		rsa     bool
		profile []string // echoscu's own profile option
		want    uint16
	}{
		{"ECDSA P-256 client, DCMTK default profile", false, nil, tls.VersionTLS13},
		{"RSA-2048 client, DCMTK default profile", true, nil, tls.VersionTLS13},
		{"ECDSA P-256 client, DCMTK Extended BCP 195 (TLS 1.2)", false, []string{"+pz"}, tls.VersionTLS12},
	}
	for _, tc := range cases {
		rsa := tc.rsa
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			cert, key := f.pki.Issue(t, "modality", testpeer.CertOptions{CN: "ct1.clinic-a.example.org", RSA: rsa})
			l := newLayerT(t, f.config())
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			type outcome struct {
				id      Identity
				calling string
				version uint16
				err     error
			}
			done := make(chan outcome, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- outcome{err: err}
					return
				}
				defer c.Close()
				tc := tls.Server(c, l.ServerConfig())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				id, err := l.Handshake(ctx, tc)
				if err != nil {
					done <- outcome{err: err}
					return
				}
				calling, err := rejectAssociation(tc)
				done <- outcome{id: id, calling: calling, version: tc.ConnectionState().Version, err: err}
			}()
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			args := append([]string{"-aet", "CLINA_CT1", "-aec", "DICOMEDGE", "+tls", key, cert, "+cf", f.pki.CACert}, tc.profile...)
			args = append(args, "127.0.0.1", port)
			out, runErr := testpeer.Run(testpeer.Context(t, 30*time.Second), "echoscu", args...)
			var o outcome
			select {
			case o = <-done:
			case <-time.After(15 * time.Second):
				t.Fatalf("server saw nothing\n%s", testpeer.Describe("echoscu", args, out))
			}
			if o.err != nil {
				t.Fatalf("server: %v\n%s", o.err, testpeer.Describe("echoscu", args, out))
			}
			if o.id.CN != "ct1.clinic-a.example.org" || o.calling != "CLINA_CT1" {
				t.Fatalf("identity %+v, calling AE %q", o.id, o.calling)
			}
			// echoscu must have got through TLS to the DICOM rejection.
			var ee interface{ ExitCode() int }
			if runErr == nil || !errors.As(runErr, &ee) || !strings.Contains(strings.ToLower(out), "reject") {
				t.Fatalf("echoscu did not report the association rejection: %v\n%s", runErr, testpeer.Describe("echoscu", args, out))
			}
			if o.version != tc.want {
				t.Errorf("negotiated %s, want %s", tls.VersionName(o.version), tls.VersionName(tc.want))
			}
			t.Logf("echoscu negotiated %s; it said: %s", tls.VersionName(o.version), strings.TrimSpace(out))
		})
	}
}

// TestDCMTKEchoscuRefused: DCMTK clients whose certificates must not pass
// never reach the DICOM layer, and the edge says why.
func TestDCMTKEchoscuRefused(t *testing.T) {
	testpeer.Require(t, "echoscu", "openssl")
	f := newFixture(t, false)
	now := time.Now()
	revoked, revokedKey := f.pki.Issue(t, "revoked", testpeer.CertOptions{})
	expired, expiredKey := f.pki.Issue(t, "expired", testpeer.CertOptions{NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)})
	rogue := testpeer.NewPKI(t, "rogue-ca")
	rogueCert, rogueKey := rogue.Issue(t, "rogue", testpeer.CertOptions{})
	f.pki.Revoke(t, revoked)
	cfg := f.config()
	cfg.CRLFiles = []string{f.pki.CRL(t)}
	srv := startServer(t, newLayerT(t, cfg), 10*time.Second)
	port := srv.addr[strings.LastIndexByte(srv.addr, ':')+1:]
	cases := []struct {
		name, cert, key, reason string
	}{
		{"revoked", revoked, revokedKey, ReasonRevoked},
		{"expired", expired, expiredKey, ReasonExpired},
		{"unknown CA", rogueCert, rogueKey, ReasonUnknownCA},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-aet", "CLINA_CT1", "+tls", tc.key, tc.cert, "+cf", f.pki.CACert, "127.0.0.1", port}
			out, err := testpeer.Run(testpeer.Context(t, 30*time.Second), "echoscu", args...)
			r := srv.next(t)
			if got := Classify(r.err); got != tc.reason {
				t.Fatalf("reason %q (%v), want %q\n%s", got, r.err, tc.reason, testpeer.Describe("echoscu", args, out))
			}
			if err == nil || strings.Contains(strings.ToLower(out), "reject") {
				t.Fatalf("echoscu got past TLS\n%s", testpeer.Describe("echoscu", args, out))
			}
		})
	}
}
