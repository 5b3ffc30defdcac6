package tlslayer

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"time"
)

// Identity is what the edge knows about a client after its certificate chain
// verified: the fields policy rules match on and the audit trail records.
type Identity struct {
	Subject     string    `json:"subject,omitempty"`
	CN          string    `json:"cn,omitempty"`
	DNS         []string  `json:"dns,omitempty"`
	URI         []string  `json:"uri,omitempty"`
	Email       []string  `json:"email,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"` // "sha256:<hex>" of the leaf's DER
	Issuer      string    `json:"issuer,omitempty"`
	Serial      string    `json:"serial,omitempty"` // hexadecimal
	NotAfter    time.Time `json:"not_after,omitzero"`
}

// IdentityFromCertificate describes a (verified) leaf certificate.
func IdentityFromCertificate(cert *x509.Certificate) Identity {
	if cert == nil {
		return Identity{}
	}
	sum := sha256.Sum256(cert.Raw)
	id := Identity{
		Subject:     cert.Subject.String(),
		CN:          cert.Subject.CommonName,
		DNS:         append([]string(nil), cert.DNSNames...),
		Email:       append([]string(nil), cert.EmailAddresses...),
		Fingerprint: "sha256:" + hex.EncodeToString(sum[:]),
		Issuer:      cert.Issuer.String(),
		Serial:      serialHex(cert.SerialNumber),
		NotAfter:    cert.NotAfter.UTC(),
	}
	for _, u := range cert.URIs {
		id.URI = append(id.URI, u.String())
	}
	return id
}

func serialHex(n *big.Int) string {
	if n == nil {
		return ""
	}
	return n.Text(16)
}
