package proxy

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// The admin listener with the console's client_ca speaks HTTPS and plain
// HTTP on one port: Prometheus and load balancers keep scraping /metrics,
// /healthz and /readyz as before, browsers use HTTPS. The first byte tells
// them apart: a TLS connection starts with a handshake record (content type
// 22, RFC 8446 5.1); an HTTP request with a method's letter.
const tlsHandshakeRecord = 0x16

// Bounds of the admin listener's sniffing: how long a connection may take
// to send its first byte, and how many may be waiting for it at once (more
// are closed at once: the admin port is no place for a connection flood to
// hold goroutines).
const (
	adminSniffTimeout = 10 * time.Second
	adminMaxSniffing  = 64
)

// sniffListener hands http.Server a *tls.Conn for each TLS connection (so
// that requests carry their TLS state, the client certificate) and the raw
// connection for plain HTTP.
type sniffListener struct {
	net.Listener
	tls      *tls.Config
	conns    chan net.Conn
	done     chan struct{}
	once     sync.Once
	sniffing chan struct{} // a slot per connection being sniffed
	err      error
	errOnce  sync.Once
}

func newSniffListener(ln net.Listener, cfg *tls.Config) *sniffListener {
	l := &sniffListener{Listener: ln, tls: cfg, conns: make(chan net.Conn), done: make(chan struct{}),
		sniffing: make(chan struct{}, adminMaxSniffing)}
	go l.loop()
	return l
}

func (l *sniffListener) loop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			l.errOnce.Do(func() { l.err = err })
			l.Close()
			return
		}
		select {
		case l.sniffing <- struct{}{}:
		default:
			c.Close()
			continue
		}
		go l.sniff(c)
	}
}

func (l *sniffListener) sniff(c net.Conn) {
	defer func() { <-l.sniffing }()
	_ = c.SetReadDeadline(time.Now().Add(adminSniffTimeout))
	br := bufio.NewReaderSize(c, 1024)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	var out net.Conn = &peekedConn{Conn: c, r: br}
	if first[0] == tlsHandshakeRecord {
		out = tls.Server(out, l.tls)
	}
	select {
	case l.conns <- out:
	case <-l.done:
		c.Close()
	}
}

func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.errOnce.Do(func() { l.err = net.ErrClosed })
		return nil, l.err
	}
}

func (l *sniffListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// peekedConn reads first what the sniffing read ahead.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// withConsole serves the console's pages beside the admin endpoints, which
// stay exactly as they are: every path but /metrics, /healthz and /readyz
// goes to the console (which answers 401 or its login page without a
// session or certificate).
func withConsole(admin, console http.Handler) http.Handler {
	mux := http.NewServeMux()
	for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
		mux.Handle(p, admin)
	}
	mux.Handle("/", console)
	return mux
}
