package proxy

import (
	"errors"
	"io"
	"testing"

	"github.com/dicomedge/dicomedge/tlslayer"
)

// An ACME CA's TLS-ALPN-01 validation is neither a failure nor audited; a
// connection closed before any byte is a probe; the rest are failures.
func TestHandshakeEnd(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		sentAny bool
		want    int
	}{
		{"ACME validation", &tlslayer.HandshakeError{Reason: tlslayer.ReasonACMEChallenge, Err: tlslayer.ErrACMEChallenge}, true, endACMEValidation},
		{"closed before any byte", &tlslayer.HandshakeError{Reason: tlslayer.ReasonEOF, Err: io.EOF}, false, endProbe},
		{"closed mid-handshake", &tlslayer.HandshakeError{Reason: tlslayer.ReasonEOF, Err: io.EOF}, true, endFailed},
		{"unknown CA", &tlslayer.HandshakeError{Reason: tlslayer.ReasonUnknownCA, Err: errors.New("x509: unknown authority")}, true, endFailed},
	}
	for _, tc := range cases {
		if got := handshakeEnd(tc.err, tc.sentAny); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
