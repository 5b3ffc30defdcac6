package tlslayer

import (
	"context"
	"crypto/tls"
	"time"
)

// Skeleton so that the proxy can compile against the API; replaced next.
type impl struct{}

func newLayer(context.Context, Config) (*Layer, error) { return nil, errNotImplemented }
func (l *Layer) serverConfig() *tls.Config             { return nil }
func (l *Layer) reload(Config) error                   { return errNotImplemented }
func (l *Layer) notAfter() time.Time                   { return time.Time{} }
func (l *Layer) close() error                          { return nil }

// Handshake runs the TLS handshake under ctx's deadline (ARTIM) and returns
// the verified client Identity, or a *HandshakeError.
func Handshake(ctx context.Context, c *tls.Conn) (Identity, error) { return Identity{}, errNotImplemented }

// Classify maps a handshake error to one of the Reason* values.
func Classify(err error) string { return ReasonOther }

// InitDevPKI writes a development PKI into dir: ca.pem/ca-key.pem,
// edge.pem/edge-key.pem for hosts (+localhost, 127.0.0.1, ::1) and
// <client>.pem/<client>-key.pem for each client. Keys are 0600. It never
// overwrites an existing file and returns the files it created.
func InitDevPKI(dir string, hosts []string, clients []string) (created []string, err error) {
	return nil, errNotImplemented
}
