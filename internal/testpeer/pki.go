package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PKI is an independent certificate authority made with openssl (`openssl
// req` and `openssl ca`) in a test's temporary directory, so the edge is
// tested against certificates it did not make itself.
type PKI struct {
	Dir    string
	Name   string
	CACert string // PEM file
	CAKey  string // PEM file
	conf   string
}

// CertOptions describes a certificate to issue. Zero values give a client
// certificate valid from an hour ago for a day, with an ECDSA P-256 key.
type CertOptions struct {
	CN        string
	Subject   string // the whole subject as openssl -subj takes it (UTF-8), e.g. "/CN=a/CN=b"; overrides CN
	DNS       []string
	IPs       []string
	URIs      []string
	Emails    []string
	Server    bool      // serverAuth (and clientAuth) extended key usage
	KeyUsage  string    // overrides the key usage extension, e.g. "critical,keyCertSign"
	ExtUsage  string    // overrides the extended key usage, e.g. "codeSigning"
	RSA       bool      // RSA-2048 instead of ECDSA P-256
	NotBefore time.Time // default: an hour ago
	NotAfter  time.Time // default: NotBefore + 25h
}

func openssl(t testing.TB, dir string, args ...string) {
	t.Helper()
	Require(t, "openssl")
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// NewPKI makes a CA named name under a fresh temporary directory.
func NewPKI(t testing.TB, name string) *PKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	for _, d := range []string{dir, filepath.Join(dir, "newcerts")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	p := &PKI{Dir: dir, Name: name, CACert: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca-key.pem"), conf: filepath.Join(dir, "ca.cnf")}
	writeFile(t, filepath.Join(dir, "index.txt"), "")
	writeFile(t, filepath.Join(dir, "serial"), "1000\n")
	writeFile(t, filepath.Join(dir, "crlnumber"), "1000\n")
	writeFile(t, p.conf, fmt.Sprintf(`[ ca ]
default_ca = CA_default
[ CA_default ]
dir              = %s
database         = $dir/index.txt
new_certs_dir    = $dir/newcerts
serial           = $dir/serial
crlnumber        = $dir/crlnumber
default_md       = sha256
policy           = policy_any
unique_subject   = no
default_crl_days = 30
[ policy_any ]
commonName = supplied
`, dir))
	openssl(t, dir, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", p.CAKey, "-out", p.CACert, "-subj", "/O=dicomedge tests/CN="+name, "-days", "3650",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	return p
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func opensslTime(tm time.Time) string { return tm.UTC().Format("20060102150405Z") }

// Issue makes a key and a certificate signed by the CA and returns the PEM
// file paths. name must be unique within the PKI.
func (p *PKI) Issue(t testing.TB, name string, o CertOptions) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(p.Dir, name+".pem")
	keyFile = filepath.Join(p.Dir, name+"-key.pem")
	csr := filepath.Join(p.Dir, name+".csr")
	keyArgs := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}
	if o.RSA {
		keyArgs = []string{"-newkey", "rsa:2048"}
	}
	cn := o.CN
	if cn == "" {
		cn = name
	}
	args := append([]string{"req", "-new"}, keyArgs...)
	subj := "/O=dicomedge tests/CN=" + cn
	if o.Subject != "" {
		subj = o.Subject
	}
	args = append(args, "-nodes", "-utf8", "-keyout", keyFile, "-out", csr, "-subj", subj)
	openssl(t, p.Dir, args...)

	var san []string
	for _, d := range o.DNS {
		san = append(san, "DNS:"+d)
	}
	for _, ip := range o.IPs {
		san = append(san, "IP:"+ip)
	}
	for _, u := range o.URIs {
		san = append(san, "URI:"+u)
	}
	for _, e := range o.Emails {
		san = append(san, "email:"+e)
	}
	ku := "critical,digitalSignature,keyEncipherment"
	if o.KeyUsage != "" {
		ku = o.KeyUsage
	}
	eku := "clientAuth"
	if o.Server {
		eku = "serverAuth,clientAuth"
	}
	if o.ExtUsage != "" {
		eku = o.ExtUsage
	}
	ext := "[ v3 ]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = " + ku + "\nextendedKeyUsage = " + eku + "\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
	if len(san) > 0 {
		ext += "subjectAltName = " + strings.Join(san, ",") + "\n"
	}
	extFile := filepath.Join(p.Dir, name+".ext")
	writeFile(t, extFile, ext)

	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	na := o.NotAfter
	if na.IsZero() {
		na = nb.Add(25 * time.Hour)
	}
	openssl(t, p.Dir, "ca", "-config", p.conf, "-batch", "-notext", "-cert", p.CACert, "-keyfile", p.CAKey,
		"-in", csr, "-out", certFile, "-extfile", extFile, "-extensions", "v3",
		"-startdate", opensslTime(nb), "-enddate", opensslTime(na))
	return certFile, keyFile
}

// Revoke marks an issued certificate revoked in the CA's database.
func (p *PKI) Revoke(t testing.TB, certFile string) {
	t.Helper()
	openssl(t, p.Dir, "ca", "-config", p.conf, "-cert", p.CACert, "-keyfile", p.CAKey, "-revoke", certFile)
}

// CRL writes the CA's current CRL (PEM) and returns its path.
func (p *PKI) CRL(t testing.TB) string {
	t.Helper()
	crl := filepath.Join(p.Dir, "ca.crl")
	openssl(t, p.Dir, "ca", "-config", p.conf, "-cert", p.CACert, "-keyfile", p.CAKey, "-gencrl", "-out", crl)
	return crl
}
