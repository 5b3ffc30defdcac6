package tlslayer

import (
	"crypto/tls"
	"errors"
)

// AdminConfig returns the tls.Config of the admin listener's HTTPS (the web
// console): the listener's PS3.15 profile (versions, suites, groups), the
// edge's own certificate as served now (rotated files and ACME renewals
// included), and client certificates verified against clientCAFiles when a
// browser presents one. A certificate is optional at the TLS level: a
// password login, and the /metrics, /healthz and /readyz scrapers, need
// none; the console decides who may see what from the verified chain.
func (l *Layer) AdminConfig(profile string, clientCAFiles []string) (*tls.Config, error) {
	p, err := lookupProfile(profile)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{
		MinVersion:       p.minVersion,
		MaxVersion:       p.maxVersion,
		CipherSuites:     append([]uint16(nil), p.suites...),
		CurvePreferences: append([]tls.CurveID(nil), p.curves...),
		NextProtos:       []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.Certificate()
		},
	}
	if len(clientCAFiles) > 0 {
		pool, err := LoadCertPool(clientCAFiles)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			// The console names an administrator by the CN (its role
			// comes from the user block the CN names), so a certificate
			// with two CNs, or one not issued for TLS clients, is refused
			// here as on the DICOM listener; and the same key sizes apply.
			if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
				return p.checkLeaf(cs.VerifiedChains[0][0])
			}
			return nil
		}
	}
	if _, err := l.Certificate(); err != nil {
		return nil, errors.New("tls: the admin listener needs the edge's certificate, and none is loaded")
	}
	return c, nil
}
