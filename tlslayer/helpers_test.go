package tlslayer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dicomedge/dicomedge/internal/testpeer"
)

// result is what the test server learned from one handshake.
type result struct {
	id  Identity
	err error
}

// testServer accepts on loopback, runs Handshake under a bound and, when it
// succeeds, echoes bytes back until the client closes.
type testServer struct {
	addr    string
	results chan result
}

func startServer(t *testing.T, l *Layer, bound time.Duration) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), results: make(chan result, 64)}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	conns := make(map[net.Conn]struct{})
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, l.ServerConfig())
				hctx, hcancel := context.WithTimeout(ctx, bound)
				id, err := l.Handshake(hctx, tc)
				hcancel()
				select {
				case s.results <- result{id, err}:
				default:
				}
				if err != nil {
					return
				}
				_ = tc.SetDeadline(time.Time{})
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *testServer) next(t *testing.T) result {
	t.Helper()
	select {
	case r := <-s.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("server saw no handshake within 10s")
	}
	return result{}
}

// pool reads a PEM CA file into a pool.
func pool(t testing.TB, files ...string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !p.AppendCertsFromPEM(b) {
			t.Fatalf("%s: no certificates", f)
		}
	}
	return p
}

func keyPair(t testing.TB, cert, key string) tls.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// dial handshakes as a client and, if that works, round-trips one message;
// the error is the first failure seen from the client's side.
func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		c.Close()
		return nil, err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		c.Close()
		return nil, err
	}
	if string(buf) != "ping" {
		c.Close()
		return nil, errors.New("echo mismatch")
	}
	return c, nil
}

// fixture is an openssl CA with an edge certificate and a Layer config.
type fixture struct {
	pki               *testpeer.PKI
	edgeCert, edgeKey string
}

func newFixture(t *testing.T, rsaEdge bool) *fixture {
	t.Helper()
	p := testpeer.NewPKI(t, "client-ca")
	cert, key := p.Issue(t, "edge", testpeer.CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true, RSA: rsaEdge})
	return &fixture{pki: p, edgeCert: cert, edgeKey: key}
}

func (f *fixture) config() Config {
	return Config{ClientCAFiles: []string{f.pki.CACert}, CertFile: f.edgeCert, KeyFile: f.edgeKey, PollInterval: -1}
}

func newLayerT(t *testing.T, cfg Config) *Layer {
	t.Helper()
	l, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
