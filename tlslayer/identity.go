package tlslayer

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"time"
	"unicode/utf8"
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
	NotBefore   time.Time `json:"not_before,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
}

// IdentityFromCertificate describes a (verified) leaf certificate.
func IdentityFromCertificate(cert *x509.Certificate) Identity {
	if cert == nil {
		return Identity{}
	}
	sum := sha256.Sum256(cert.Raw)
	id := Identity{
		Subject:     nameString(cert.Subject, cert.RawSubject),
		CN:          cert.Subject.CommonName,
		DNS:         append([]string(nil), cert.DNSNames...),
		Email:       append([]string(nil), cert.EmailAddresses...),
		Fingerprint: "sha256:" + hex.EncodeToString(sum[:]),
		Issuer:      nameString(cert.Issuer, cert.RawIssuer),
		Serial:      serialHex(cert.SerialNumber),
		NotBefore:   cert.NotBefore.UTC(),
		NotAfter:    cert.NotAfter.UTC(),
	}
	for _, u := range cert.URIs {
		id.URI = append(id.URI, u.String())
	}
	return id
}

// nameString is the RFC 4514 form of a subject or issuer. pkix.Name keeps
// one value per attribute type, so a subject with two CNs ("CN=harmless,
// CN=modality-a", refused as multiple-cn) would print with one of them:
// when the raw name holds attributes the parsed one drops, every attribute
// of the raw name is shown, as the certificate has it.
func nameString(n pkix.Name, raw []byte) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &seq); err != nil || len(rest) != 0 {
		return n.String()
	}
	count := func(s pkix.RDNSequence) int {
		c := 0
		for _, rdn := range s {
			c += len(rdn)
		}
		return c
	}
	if count(seq) > count(n.ToRDNSequence()) {
		return seq.String()
	}
	return n.String()
}

// Bounds on what is kept of a certificate that did not verify: its names
// are whatever the client wrote (a handshake message may hold 64 KiB), and
// the record that names it must stay small however many failures come.
const (
	maxPresentedString = 512 // bytes of a subject, issuer, CN or SAN
	maxPresentedNames  = 8   // SANs of each kind
	maxPresentedSerial = 64  // hex digits (RFC 5280 4.1.2.2 allows 20 octets)
)

// PresentedIdentity describes a certificate a client presented that did
// not verify (HandshakeError.Presented): as IdentityFromCertificate, with
// each string cut to a bound (marked by a trailing "...") and at most a few
// names of each kind. The fingerprint is of the whole certificate.
func PresentedIdentity(cert *x509.Certificate) Identity {
	id := IdentityFromCertificate(cert)
	id.Subject = clip(id.Subject, maxPresentedString)
	id.CN = clip(id.CN, maxPresentedString)
	id.Issuer = clip(id.Issuer, maxPresentedString)
	id.Serial = clip(id.Serial, maxPresentedSerial)
	for _, l := range []*[]string{&id.DNS, &id.URI, &id.Email} {
		if len(*l) > maxPresentedNames {
			*l = (*l)[:maxPresentedNames]
		}
		for i := range *l {
			(*l)[i] = clip((*l)[i], maxPresentedString)
		}
	}
	return id
}

// clip cuts s to at most n bytes plus "...", at a UTF-8 boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func serialHex(n *big.Int) string {
	if n == nil {
		return ""
	}
	return n.Text(16)
}
