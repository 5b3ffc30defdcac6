package tlslayer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Development PKI lifetimes: long enough not to bother a developer, short
// enough that nobody mistakes the files for production ones.
const (
	devCALifetime   = 5 * 365 * 24 * time.Hour
	devLeafLifetime = 397 * 24 * time.Hour
)

var devNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// DevPKIFiles lists the files InitDevPKI manages for these clients, in the
// order it creates them.
func DevPKIFiles(clients []string) []string {
	fs := []string{"ca.pem", "ca-key.pem", "edge.pem", "edge-key.pem"}
	for _, c := range clients {
		fs = append(fs, c+".pem", c+"-key.pem")
	}
	return fs
}

// InitDevPKI writes a development PKI into dir (made 0700 if missing):
// ca.pem/ca-key.pem (ECDSA P-256 CA), edge.pem/edge-key.pem (server
// certificate for hosts plus localhost, 127.0.0.1 and ::1) and, for each
// client, <client>.pem/<client>-key.pem (clientAuth, CN = the name). Keys are
// 0600. A pair whose files both exist is kept; nothing is ever overwritten
// (files are opened O_EXCL). It returns the paths it created.
func InitDevPKI(dir string, hosts []string, clients []string) (created []string, err error) {
	for _, c := range clients {
		if !devNameRE.MatchString(c) || c == "ca" || c == "edge" {
			return nil, fmt.Errorf("client name %q: want letters, digits, '.', '_' or '-' (and not ca or edge)", c)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caCertPath, caKeyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	var ca *x509.Certificate
	var caKey crypto.Signer
	switch st, err := pairState(caCertPath, caKeyPath); {
	case err != nil:
		return nil, err
	case st == pairMissing:
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			Subject:               pkix.Name{Organization: []string{"dicomedge development"}, CommonName: "dicomedge development CA"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(devCALifetime),
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLenZero:        true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		if ca, err = sign(tmpl, tmpl, key, key); err != nil {
			return nil, err
		}
		caKey = key
		if created, err = writePair(created, caCertPath, caKeyPath, ca, key); err != nil {
			return created, err
		}
	default:
		if ca, caKey, err = loadCA(caCertPath, caKeyPath); err != nil {
			return nil, fmt.Errorf("existing development CA: %w", err)
		}
	}

	issue := func(name string, tmpl *x509.Certificate) error {
		certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		st, err := pairState(certPath, keyPath)
		if err != nil || st == pairPresent {
			return err
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(devLeafLifetime)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.BasicConstraintsValid = true
		cert, err := sign(tmpl, ca, key, caKey)
		if err != nil {
			return err
		}
		created, err = writePair(created, certPath, keyPath, cert, key)
		return err
	}

	edge := &x509.Certificate{
		Subject: pkix.Name{Organization: []string{"dicomedge development"}, CommonName: "dicomedge"},
		// clientAuth too: the edge presents this certificate to an audit
		// collector (audit.syslog) and to backends that require one.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	seen := map[string]bool{}
	for _, h := range append(append([]string(nil), hosts...), "localhost", "127.0.0.1", "::1") {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			edge.IPAddresses = append(edge.IPAddresses, ip)
		} else {
			edge.DNSNames = append(edge.DNSNames, h)
		}
	}
	if len(hosts) > 0 && hosts[0] != "" {
		edge.Subject.CommonName = hosts[0]
	}
	if err := issue("edge", edge); err != nil {
		return created, err
	}
	for _, c := range clients {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{Organization: []string{"dicomedge development"}, CommonName: c},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := issue(c, tmpl); err != nil {
			return created, err
		}
	}
	return created, nil
}

type pairStatus int

const (
	pairMissing pairStatus = iota
	pairPresent
)

// pairState says whether both files exist or neither; one without the other
// is an error, because completing it would mean overwriting or orphaning.
func pairState(certPath, keyPath string) (pairStatus, error) {
	ce, err := exists(certPath)
	if err != nil {
		return 0, err
	}
	ke, err := exists(keyPath)
	if err != nil {
		return 0, err
	}
	switch {
	case ce && ke:
		return pairPresent, nil
	case !ce && !ke:
		return pairMissing, nil
	case ce:
		return 0, fmt.Errorf("%s exists but %s does not; remove one or supply the other", certPath, keyPath)
	default:
		return 0, fmt.Errorf("%s exists but %s does not; remove one or supply the other", keyPath, certPath)
	}
}

func exists(p string) (bool, error) {
	_, err := os.Lstat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

func sign(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// writePair writes the key first (0600) and the certificate second (0644),
// both with O_EXCL so an existing file is never replaced.
func writePair(created []string, certPath, keyPath string, cert *x509.Certificate, key *ecdsa.PrivateKey) ([]string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return created, err
	}
	if err := writeExcl(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return created, err
	}
	created = append(created, keyPath)
	if err := writeExcl(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		return created, err
	}
	return append(created, certPath), nil
}

func writeExcl(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil { // umask may have narrowed or widened nothing; be exact
		f.Close()
		return err
	}
	return f.Close()
}

func loadCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	data, err := readBounded(certPath)
	if err != nil {
		return nil, nil, err
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	keyPEM, err := readBounded(keyPath)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		return nil, nil, fmt.Errorf("%s: no PEM key", keyPath)
	}
	var k any
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: key type %T cannot sign", keyPath, k)
	}
	return certs[0], signer, nil
}
