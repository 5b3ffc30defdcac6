package testpeer

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Rsyslog is a real rsyslogd receiving RFC 5425 (syslog over TLS, octet
// counting) on a loopback port, as a SIEM collector does: it requires a
// client certificate that chains to one of the client CAs
// (StreamDriver.AuthMode x509/certvalid) and stores one line per message in
// Out: PRI|MSGID|HOSTNAME|APP-NAME|MSG.
type Rsyslog struct {
	Addr string
	Out  string // received messages, one per line
	CA   string // the root that signs the collector's certificate
	Proc *Process
	dir  string
	conf string
	t    testing.TB
}

// StartRsyslog starts rsyslogd on addr (from FreeAddr) trusting client
// certificates issued by clientCAs (PEM files).
func StartRsyslog(t testing.TB, addr string, clientCAs ...string) *Rsyslog {
	t.Helper()
	Require(t, "rsyslogd", "openssl")
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"); err != nil && !InCI() {
		t.Skip("rsyslog-gnutls not installed")
	}
	pki := NewPKI(t, "siem")
	cert, key := pki.Issue(t, "siem", CertOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []string{"127.0.0.1"}, Server: true, RSA: true})
	dir := t.TempDir()
	r := &Rsyslog{Addr: addr, Out: filepath.Join(dir, "received.log"), CA: pki.CACert, dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), t: t}
	// The CA file names the collector's own root and the senders' roots.
	bundle := filepath.Join(dir, "ca-bundle.pem")
	var b strings.Builder
	for _, f := range append([]string{pki.CACert}, clientCAs...) {
		pem, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(pem)
	}
	writeFile(t, bundle, b.String())
	writeFile(t, r.conf, fmt.Sprintf(`
global(
  workDirectory=%q
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile=%q
  defaultNetstreamDriverCertFile=%q
  defaultNetstreamDriverKeyFile=%q
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid")
input(type="imtcp" port=%q address="127.0.0.1")
template(name="line" type="string" string="%%pri%%|%%msgid%%|%%hostname%%|%%app-name%%|%%msg%%\n")
action(type="omfile" file=%q template="line")
`, dir, bundle, cert, key, fmt.Sprint(port(addr)), r.Out))
	r.start()
	return r
}

func (r *Rsyslog) start() {
	r.t.Helper()
	r.Proc = Start(r.t, "rsyslogd", "-n", "-f", r.conf, "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	WaitListening(r.t, r.Addr, StartupTimeout, r.Proc)
}

// Stop ends rsyslogd with SIGTERM (it writes out what it received) and
// waits for it.
func (r *Rsyslog) Stop() {
	r.t.Helper()
	_ = r.Proc.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.Proc.Done():
	case <-time.After(20 * time.Second):
		r.t.Fatalf("rsyslogd did not stop:\n%s", r.Proc.Output())
	}
}

// Restart starts rsyslogd again on the same address; it appends to Out.
func (r *Rsyslog) Restart() {
	r.t.Helper()
	r.start()
}

// Lines returns the messages stored so far.
func (r *Rsyslog) Lines() []string {
	b, _ := os.ReadFile(r.Out)
	// rsyslogd may be in the middle of writing a message: only lines it
	// has finished (ended by a newline) are messages.
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(string(b[:i]), "\n")
}

// WaitLines waits until the collector stored at least n messages (or 20 s)
// and returns them all.
func (r *Rsyslog) WaitLines(t testing.TB, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		if got = r.Lines(); len(got) >= n {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("collector stored %d of %d messages:\n%s\nrsyslogd output:\n%s", len(got), n, strings.Join(got, "\n"), r.Proc.Output())
	return nil
}
