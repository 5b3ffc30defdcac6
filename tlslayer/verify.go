package tlslayer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// maxPKIFile bounds what is read from a certificate, key, CA or CRL file, so
// a wrong path (a disk image, /dev/zero) cannot exhaust memory.
const maxPKIFile = 64 << 20

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPKIFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxPKIFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPKIFile)
	}
	return data, nil
}

// parseCertificates accepts a PEM bundle (CERTIFICATE blocks; other blocks
// are skipped) or one DER certificate.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	return parsePEMOrDER(data, "CERTIFICATE", "a DER certificate", x509.ParseCertificate)
}

// parseCRLs accepts PEM (one or more X509 CRL blocks) or one DER CRL.
func parseCRLs(data []byte) ([]*x509.RevocationList, error) {
	return parsePEMOrDER(data, "X509 CRL", "a DER CRL", x509.ParseRevocationList)
}

// parsePEMOrDER parses every PEM block of blockType in data (other blocks
// are skipped) or, when data holds no PEM at all, data as one DER object.
func parsePEMOrDER[T any](data []byte, blockType, derName string, parse func([]byte) (T, error)) ([]T, error) {
	var out []T
	rest := data
	sawPEM := false
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		sawPEM = true
		if blk.Type != blockType {
			continue
		}
		v, err := parse(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if !sawPEM {
		v, err := parse(data)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor %s: %w", derName, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s in PEM data", blockType)
	}
	return out, nil
}

// crlSet is the revocation state of one issuing CA, merged from every CRL it
// signed that was loaded.
type crlSet struct {
	issuer     *x509.Certificate
	revoked    map[string]struct{} // serial numbers, decimal
	nextUpdate time.Time           // the latest NextUpdate among its CRLs
}

// buildCRLSets verifies each CRL's signature against the CA that issued it
// (matched by subject, then signature) and indexes revoked serials by the
// issuer's raw subject.
func buildCRLSets(cas []*x509.Certificate, crls []*x509.RevocationList) (map[string]*crlSet, error) {
	sets := make(map[string]*crlSet)
	for _, crl := range crls {
		var issuer *x509.Certificate
		var lastErr error
		for _, ca := range cas {
			if !bytes.Equal(ca.RawSubject, crl.RawIssuer) {
				continue
			}
			if err := crl.CheckSignatureFrom(ca); err != nil {
				lastErr = err
				continue
			}
			issuer = ca
			break
		}
		if issuer == nil {
			if lastErr != nil {
				return nil, fmt.Errorf("CRL issued by %q: signature does not verify against that client CA: %w", crl.Issuer, lastErr)
			}
			return nil, fmt.Errorf("CRL issued by %q: no such CA among client_ca", crl.Issuer)
		}
		key := string(issuer.RawSubject)
		s := sets[key]
		if s == nil {
			s = &crlSet{issuer: issuer, revoked: make(map[string]struct{})}
			sets[key] = s
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber != nil {
				s.revoked[e.SerialNumber.String()] = struct{}{}
			}
		}
		if crl.NextUpdate.After(s.nextUpdate) {
			s.nextUpdate = crl.NextUpdate
		}
	}
	return sets, nil
}

// checkChain applies what crypto/tls's own verification does not: the CRLs
// (of every certificate of each chain, the trust anchor included unless it
// is a root), the key usage bits and the profile's key sizes. chains are the verified
// chains (leaf first, root last).
func (st *state) checkChain(chains [][]*x509.Certificate, now time.Time) error {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return &HandshakeError{Reason: ReasonNoClientCertificate, Err: errors.New("no verified client chain")}
	}
	if err := st.prof.checkLeaf(chains[0][0]); err != nil {
		return err
	}
	for _, chain := range chains {
		// Every certificate can be revoked by its issuer, the trust anchor
		// too unless it is self-issued (a root): an intermediate is in
		// client_ca so that its CRL loads, which makes it an anchor, and a
		// client that leaves it out of the chain it sends must not escape
		// the root's CRL that revokes it.
		for i, c := range chain {
			if i == len(chain)-1 && bytes.Equal(c.RawIssuer, c.RawSubject) {
				break
			}
			set := st.crls[string(c.RawIssuer)]
			if set == nil {
				continue
			}
			if !set.nextUpdate.IsZero() && now.After(set.nextUpdate) && !st.cfg.AllowExpiredCRL {
				return &HandshakeError{Reason: ReasonCRLExpired, Err: fmt.Errorf("CRL of %q expired at %s: revocation status unknown, failing closed", set.issuer.Subject, set.nextUpdate.UTC().Format(time.RFC3339))}
			}
			if _, revoked := set.revoked[c.SerialNumber.String()]; revoked {
				return &HandshakeError{Reason: ReasonRevoked, Err: fmt.Errorf("certificate %q serial %s is revoked by %q", c.Subject, serialHex(c.SerialNumber), set.issuer.Subject)}
			}
		}
	}
	return nil
}

// checkLeaf applies to a verified client certificate what x509
// verification does not: one CN, extended key usage clientAuth, a key usage
// that allows signing, and the profile's key sizes. The DICOM listener and
// the admin listener both name a client by its CN.
// CheckClientLeaf applies to leaf the checks a DICOM listener under the
// named profile makes of a client certificate beyond its chain (one CN,
// clientAuth, digitalSignature, key size), for tools that explain a
// decision without a handshake.
func CheckClientLeaf(profileName string, leaf *x509.Certificate) error {
	p, err := lookupProfile(profileName)
	if err != nil {
		return err
	}
	return p.checkLeaf(leaf)
}

func (p profile) checkLeaf(leaf *x509.Certificate) error {
	// A subject with two CNs ("CN=harmless, CN=modality-a") is shown by
	// some tools by its first CN and matched by others on its last: the
	// policy's client_cn and the audit record would not name the same
	// client a reviewer sees. Refused rather than guessed (docs/refusals.md).
	if n := countCN(leaf); n > 1 {
		return &HandshakeError{Reason: ReasonMultipleCN, Err: fmt.Errorf("client certificate subject %q has %d CN attributes", leaf.Subject, n)}
	}
	// x509 verification takes a leaf without extended key usage, or with
	// anyExtendedKeyUsage, as good for clientAuth; such a certificate was
	// not issued for TLS clients (an S/MIME or signing certificate, a CA
	// certificate presented as a leaf), and the docs require clientAuth.
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return &HandshakeError{Reason: ReasonBadKeyUsage, Err: errors.New("client certificate lacks extended key usage clientAuth")}
	}
	// RFC 5280 4.2.1.3 / RFC 8446 4.4.2.4: a TLS client certificate signs the
	// handshake, so if the key usage extension is present it must allow that.
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return &HandshakeError{Reason: ReasonBadKeyUsage, Err: fmt.Errorf("client certificate key usage %#x lacks digitalSignature", int(leaf.KeyUsage))}
	}
	if err := p.checkKeySize(leaf); err != nil {
		return &HandshakeError{Reason: ReasonBadCertificate, Err: err}
	}
	return nil
}

func (p profile) checkKeySize(c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if p.minRSABits > 0 && k.N.BitLen() < p.minRSABits {
			return fmt.Errorf("RSA key of %d bits; profile %s requires %d", k.N.BitLen(), p.name, p.minRSABits)
		}
	case *ecdsa.PublicKey:
		if p.minECBits > 0 && k.Curve.Params().BitSize < p.minECBits {
			return fmt.Errorf("ECDSA key of %d bits; profile %s requires %d", k.Curve.Params().BitSize, p.name, p.minECBits)
		}
	}
	return nil
}

// oidCommonName is id-at-commonName (X.520, RFC 5280 A.1).
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// countCN counts the CN attributes of c's subject, in every RDN.
func countCN(c *x509.Certificate) int {
	n := 0
	for _, a := range c.Subject.Names {
		if a.Type.Equal(oidCommonName) {
			n++
		}
	}
	return n
}

// issuedDespite reports whether the certificate a failed handshake
// presented chains to one of this state's client CAs apart from the
// failure itself: an expired (or not yet valid) certificate is judged as
// if it were valid now, one with the wrong extended key usage for any
// usage. Other failures (an unknown CA, a malformed certificate) say
// nothing good about its issuer.
func (st *state) issuedDespite(he *HandshakeError) bool {
	leaf := he.Presented
	if st == nil || leaf == nil {
		return false
	}
	opts := x509.VerifyOptions{Roots: st.pool, Intermediates: x509.NewCertPool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: time.Now()}
	for _, c := range he.chain {
		if c != leaf {
			opts.Intermediates.AddCert(c)
		}
	}
	switch he.Reason {
	case ReasonExpired, ReasonNotYetValid:
		// A copy whose parsed dates span now: Verify judges validity by
		// these fields, while the issuer's signature covers the original
		// RawTBSCertificate, so the copy verifies exactly when the
		// certificate was signed by a client CA (through a chain valid now).
		undated := *leaf
		undated.NotBefore, undated.NotAfter = opts.CurrentTime.Add(-time.Minute), opts.CurrentTime.Add(time.Minute)
		leaf = &undated
	case ReasonBadKeyUsage:
	default:
		return false
	}
	_, err := leaf.Verify(opts)
	return err == nil
}
