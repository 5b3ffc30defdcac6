package testpeer

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BIND is a BIND9 named serving one primary zone on loopback, which a TSIG
// key may update (RFC 2136): the DNS server of an ACME DNS-01 test.
type BIND struct {
	Addr    string // 127.0.0.1:port, UDP and TCP
	Zone    string // "edge.test."
	KeyName string // "dicomedge-acme."
	KeyAlg  string // "hmac-sha256"
	Secret  string // base64
	KeyFile string // tsig-keygen's output: key "dicomedge-acme" { algorithm ...; secret "..."; };
	// Extra holds the secrets of the further keys StartBIND was asked for
	// (by name, fully qualified), each allowed the same updates.
	Extra map[string]string
	Proc  *Process
}

// sbin finds a tool that Debian installs in /usr/sbin, which a non-root
// PATH may lack.
func sbin(t testing.TB, tool string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", tool); fileExists(p) {
		return p
	}
	Require(t, tool) // fails in CI, skips elsewhere
	return tool
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

var secretRE = regexp.MustCompile(`secret\s+"([^"]+)"`)

// StartBIND runs named in the foreground (-g) with its own named.conf in a
// temporary directory: zone (e.g. "edge.test.") as a primary with an SOA,
// an NS and ns1 at 127.0.0.1, updatable (TXT records under the zone only)
// by a fresh hmac-sha256 key from tsig-keygen. Recursion is off: it answers
// for its zone and nothing else, so nothing it serves leaves the machine.
// extraKeys names further keys to make (e.g. to rotate to).
func StartBIND(t testing.TB, zone string, extraKeys ...string) *BIND {
	t.Helper()
	named, keygen := sbin(t, "named"), sbin(t, "tsig-keygen")
	zone = dns.Fqdn(zone)
	dir := t.TempDir()
	b := &BIND{Zone: zone, KeyName: "dicomedge-acme.", KeyAlg: "hmac-sha256", KeyFile: filepath.Join(dir, "tsig.key"),
		Extra: map[string]string{}}
	var includes, grants string
	for i, name := range append([]string{"dicomedge-acme"}, extraKeys...) {
		out, err := exec.Command(keygen, "-a", b.KeyAlg, name).CombinedOutput()
		m := secretRE.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("tsig-keygen: %v\n%s", err, out)
		}
		file := filepath.Join(dir, fmt.Sprintf("tsig%d.key", i))
		if i == 0 {
			b.Secret, file = string(m[1]), b.KeyFile
		} else {
			b.Extra[dns.Fqdn(name)] = string(m[1])
		}
		if err := os.WriteFile(file, out, 0o600); err != nil {
			t.Fatal(err)
		}
		includes += fmt.Sprintf("include %q;\n", file)
		grants += fmt.Sprintf(" grant %s zonesub TXT;", dns.Fqdn(name))
	}
	zoneFile := fmt.Sprintf(`$TTL 60
@   IN SOA ns1.%[1]s hostmaster.%[1]s 1 60 60 3600 1
@   IN NS  ns1.%[1]s
ns1 IN A   127.0.0.1
`, zone)
	if err := os.WriteFile(filepath.Join(dir, "zone.db"), []byte(zoneFile), 0o644); err != nil {
		t.Fatal(err)
	}
	var user []string
	if os.Geteuid() == 0 {
		user = []string{"-u", "root"} // stay root: the directory is root's, not bind's
	}
	for attempt := 0; ; attempt++ {
		port := FreePort(t)
		conf := fmt.Sprintf(`%[4]soptions {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	querylog yes;
};
controls { };
zone "%[3]s" {
	type primary;
	file "%[1]s/zone.db";
	update-policy {%[5]s };
};
`, dir, port, zone, includes, grants)
		confPath := filepath.Join(dir, "named.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		b.Proc = Start(t, named, append([]string{"-g", "-4", "-n", "1", "-c", confPath}, user...)...)
		err := waitListening(b.Addr, StartupTimeout, b.Proc)
		if err == nil {
			err = b.waitZone(10 * time.Second)
		}
		if err == nil {
			return b
		}
		// named goes on running without a socket it could not bind.
		_ = b.Proc.Cmd.Process.Kill()
		<-b.Proc.Done()
		if attempt == 4 || !addressInUse(b.Proc.Output()) {
			t.Fatalf("named: %v\n%s", err, b.Proc.Output())
		}
	}
}

// waitZone waits until the zone's SOA is answered over UDP: named listens
// on TCP before it has loaded the zone.
func (b *BIND) waitZone(timeout time.Duration) error {
	c := &dns.Client{Timeout: time.Second}
	q := new(dns.Msg)
	q.SetQuestion(b.Zone, dns.TypeSOA)
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r, _, err := c.Exchange(q, b.Addr)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 && r.Authoritative {
			return nil
		}
		last = fmt.Errorf("SOA %s at %s: %v %v", b.Zone, b.Addr, err, r)
	}
	return last
}

// TXT returns the TXT records named name (absolute) as the server answers
// them now.
func (b *BIND) TXT(t testing.TB, name string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, b.Addr)
	if err != nil {
		t.Fatalf("TXT %s at %s: %v", name, b.Addr, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, txt.Txt...)
		}
	}
	return out
}
