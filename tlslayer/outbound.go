package tlslayer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// Outbound describes the edge as a TLS client: towards a backend PACS or a
// syslog collector.
type Outbound struct {
	Profile    string   // PS3.15 profile (as Config.Profile); "" = the default
	CAFiles    []string // roots that sign the server; empty = the system roots
	ServerName string   // verified name; "" = the host part of Address
	Address    string   // host:port, for the default ServerName
	CertFile   string   // client certificate (PEM) and its key, optional ...
	KeyFile    string
	// ... or, when CertFile is empty, Certificate supplies the client
	// certificate at each handshake: the edge's own, current one (files
	// reloaded or renewed by ACME since the config was built included).
	Certificate func() (*tls.Certificate, error)
}

// OutboundConfig builds the tls.Config for o: the profile's versions,
// suites and groups (the same ones the listener enforces), o's roots,
// server name and client certificate. Files are read now.
func OutboundConfig(o Outbound) (*tls.Config, error) {
	cfg, err := ClientConfig(o.Profile)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = o.ServerName
	if cfg.ServerName == "" && o.Address != "" {
		host, _, err := net.SplitHostPort(o.Address)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	if len(o.CAFiles) > 0 {
		if cfg.RootCAs, err = LoadCertPool(o.CAFiles); err != nil {
			return nil, err
		}
	}
	switch {
	case o.CertFile != "" || o.KeyFile != "":
		if o.CertFile == "" || o.KeyFile == "" {
			return nil, errors.New("tls: cert_file and key_file go together")
		}
		pair, err := loadKeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{*pair}
		// Presented whatever CA names the server's CertificateRequest lists
		// (crypto/tls would otherwise send none when no name matches): the
		// server judges it, and says why if it refuses it.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair, nil }
	case o.Certificate != nil:
		get := o.Certificate
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := get()
			if err != nil || c == nil {
				// An empty certificate lets the server decide (and say why).
				return &tls.Certificate{}, nil
			}
			return c, nil
		}
	}
	return cfg, nil
}

// LoadCertPool reads PEM (or DER) certificate files, each bounded in size,
// into a pool. A file without a certificate is an error.
func LoadCertPool(files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		data, err := readBounded(f)
		if err != nil {
			return nil, fmt.Errorf("tls: ca: %w", err)
		}
		certs, err := parseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("tls: ca %s: %w", f, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// Certificate returns the certificate the listener serves now (from files,
// or the newest one ACME obtained), for use as the edge's client
// certificate.
func (l *Layer) Certificate() (*tls.Certificate, error) {
	if st := l.st.Load(); st != nil && st.cert != nil {
		return st.cert, nil
	}
	if l.acme != nil {
		if c := l.acme.current(); c != nil {
			return c, nil
		}
	}
	return nil, errors.New("tls: no certificate loaded")
}
