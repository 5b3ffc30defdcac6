package testpeer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Orthanc is a running Orthanc PACS with its DICOM and HTTP ports on
// loopback and its storage in a temporary directory.
type Orthanc struct {
	AETitle string
	DICOM   string // host:port
	HTTP    string // host:port
	Storage string
	*Process
	bin, conf string
}

// OrthancModality is a remote AE Orthanc knows (C-MOVE destinations, and
// callers allowed to query and retrieve).
type OrthancModality struct {
	AETitle string
	Host    string
	Port    int
}

// StartOrthanc runs /usr/sbin/Orthanc with a JSON configuration in a
// temporary directory. Every AE in modalities may find, get and move, and is
// a valid C-MOVE destination.
func StartOrthanc(t testing.TB, aet string, modalities map[string]OrthancModality) *Orthanc {
	t.Helper()
	return StartOrthancWith(t, aet, modalities, nil)
}

// StartOrthancTLS runs Orthanc with its own DICOM TLS (Orthanc 1.9+): the
// DICOM port speaks TLS only, with certFile/keyFile, and requires a client
// certificate chaining to caFile.
func StartOrthancTLS(t testing.TB, aet, certFile, keyFile, caFile string) *Orthanc {
	t.Helper()
	return StartOrthancWith(t, aet, nil, map[string]any{
		"DicomTlsEnabled":                   true,
		"DicomTlsCertificate":               certFile,
		"DicomTlsPrivateKey":                keyFile,
		"DicomTlsTrustedCertificates":       caFile,
		"DicomTlsRemoteCertificateRequired": true,
	})
}

// StartOrthancWith is StartOrthanc with extra configuration keys, which
// override the defaults.
func StartOrthancWith(t testing.TB, aet string, modalities map[string]OrthancModality, extra map[string]any) *Orthanc {
	t.Helper()
	bin := "Orthanc"
	if _, err := exec.LookPath(bin); err != nil {
		if _, err2 := os.Stat("/usr/sbin/Orthanc"); err2 == nil {
			bin = "/usr/sbin/Orthanc"
		}
	}
	Require(t, bin)
	dir := t.TempDir()
	o := &Orthanc{AETitle: aet, Storage: filepath.Join(dir, "storage"), bin: bin, conf: filepath.Join(dir, "orthanc.json")}
	mods := map[string]any{}
	for name, m := range modalities {
		mods[name] = map[string]any{
			"AET": m.AETitle, "Host": m.Host, "Port": m.Port,
			"AllowEcho": true, "AllowFind": true, "AllowGet": true, "AllowMove": true, "AllowStore": true,
		}
	}
	var addrs []string
	o.Process, addrs = StartListening(t, 2, bin, func(addrs []string) []string {
		cfg := map[string]any{
			"Name":                  "dicomedge-test",
			"StorageDirectory":      o.Storage,
			"IndexDirectory":        o.Storage,
			"DicomAet":              aet,
			"DicomPort":             port(addrs[0]),
			"HttpPort":              port(addrs[1]),
			"RemoteAccessAllowed":   false,
			"AuthenticationEnabled": false,
			"DicomCheckCalledAet":   false,
			"DicomAlwaysAllowEcho":  true,
			"DicomAlwaysAllowStore": true,
			"DicomAlwaysAllowFind":  true,
			"DicomAlwaysAllowGet":   true,
			"DicomAlwaysAllowMove":  true,
			"DicomModalities":       mods,
			"Plugins":               []string{},
			"HttpServerEnabled":     true,
			"StableAge":             1,
			// Without TCP_NODELAY Orthanc's DCMTK core waits on delayed ACKs too.
			"DicomScpTimeout": 30,
		}
		for k, v := range extra {
			cfg[k] = v
		}
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "orthanc.json")
		writeFile(t, conf, string(b))
		// --verbose logs each incoming request, which tests use to prove what reached the PACS.
		return []string{"--verbose", conf}
	})
	o.DICOM, o.HTTP = addrs[0], addrs[1]
	o.waitReady(t)
	return o
}

// Stop kills Orthanc, as a PACS going down for maintenance, and waits for
// it to exit.
func (o *Orthanc) Stop(t testing.TB) {
	t.Helper()
	_ = o.Cmd.Process.Kill()
	select {
	case <-o.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Orthanc did not exit after SIGKILL")
	}
}

// Restart starts a stopped Orthanc again with the same configuration,
// ports and storage, and waits until it is ready.
func (o *Orthanc) Restart(t testing.TB) {
	t.Helper()
	o.Process = Start(t, o.bin, "--verbose", o.conf)
	o.waitReady(t)
}

// StartOrthancDICOMweb runs Orthanc with Debian's DICOMweb plugin
// (orthanc-dicomweb) serving DICOMweb under http://HTTP/dicom-web.
func StartOrthancDICOMweb(t testing.TB, aet string) *Orthanc {
	t.Helper()
	plugin := "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
	if _, err := os.Stat(plugin); err != nil {
		if InCI() {
			t.Fatalf("the Orthanc DICOMweb plugin is missing (%s): scripts/test installs orthanc-dicomweb", plugin)
		}
		t.Skipf("the Orthanc DICOMweb plugin is missing (%s); run scripts/test to install orthanc-dicomweb", plugin)
	}
	return StartOrthancWith(t, aet, nil, map[string]any{
		"Plugins":  []string{plugin},
		"DicomWeb": map[string]any{"Enable": true, "Root": "/dicom-web/"},
	})
}

// StartHTTPSGate runs HAProxy in HTTP mode as a TLS front to upstream
// (host:port, plain HTTP) that lets a request through only with
// "Authorization: Bearer <token>" and answers 401 otherwise, as a site puts
// an authenticating reverse proxy before a DICOMweb service. pemFile holds
// the server certificate and its key; with clientCA the gate requires a
// client certificate chaining to it (mutual TLS). It returns the address.
func StartHTTPSGate(t testing.TB, upstream, pemFile, clientCA, token string) (*Process, string) {
	t.Helper()
	bin := "haproxy"
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		bin = "/usr/sbin/haproxy"
	}
	Require(t, bin)
	conf := filepath.Join(t.TempDir(), "haproxy-gate.cfg")
	p, addrs := StartListening(t, 1, bin, func(addrs []string) []string {
		verify := ""
		if clientCA != "" {
			verify = " ca-file " + clientCA + " verify required"
		}
		cfg := fmt.Sprintf(`global
  maxconn 256
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend gate
  bind %s ssl crt %s%s
  http-request deny deny_status 401 unless { req.hdr(authorization) -m str "Bearer %s" }
  default_backend dicomweb
backend dicomweb
  server orthanc %s
`, addrs[0], pemFile, verify, token, upstream)
		writeFile(t, conf, cfg)
		return []string{"-db", "-f", conf}
	})
	return p, addrs[0]
}

// waitReady waits until this Orthanc's REST API answers /system with its
// own DICOM port: Orthanc opens its HTTP server after its DICOM server, so
// both are up then. Seeing the port answer is not enough on a busy machine:
// another process may hold a port picked as free a moment ago while Orthanc
// is still loading its dictionaries.
func (o *Orthanc) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(StartupTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		var sys struct {
			DicomAet  string
			DicomPort int
		}
		resp, err := client.Get("http://" + o.HTTP + "/system")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&sys)
			resp.Body.Close()
			if err == nil && sys.DicomPort == port(o.DICOM) && sys.DicomAet == o.AETitle {
				return
			}
		}
		select {
		case <-o.Done():
			t.Fatalf("Orthanc exited before it was ready: %v\n%s", o.Process.err, o.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Orthanc not ready on %s (DICOM %s) after %v: %v\n%s", o.HTTP, o.DICOM, StartupTimeout, err, o.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func port(addr string) int {
	var p int
	i := strings.LastIndexByte(addr, ':')
	fmt.Sscanf(addr[i+1:], "%d", &p)
	return p
}

// Port returns the numeric port of a host:port address.
func Port(addr string) int { return port(addr) }

// Host returns the host part of a host:port address.
func Host(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	return strings.Trim(addr[:i], "[]")
}

// StunnelClient runs stunnel4 in client mode: plain TCP on Accept (loopback),
// TLS with the given client certificate to Connect, verifying the server
// against caFile. This is how a site puts movescu/getscu (no +tls in Debian's
// DCMTK 3.6.7) in front of a TLS-only edge.
type StunnelClient struct {
	Accept string
	*Process
}

// StartStunnelClient starts the client-mode tunnel and waits for it.
func StartStunnelClient(t testing.TB, connect, certFile, keyFile, caFile string) *StunnelClient {
	t.Helper()
	return startStunnel(t, "client = yes\n", connect, certFile, keyFile, caFile)
}

// StunnelServer runs stunnel4 in server mode: TLS on Accept requiring a
// client certificate from caFile, plain TCP to Connect. It is the baseline a
// site would otherwise deploy in front of a plain PACS.
func StartStunnelServer(t testing.TB, connect, certFile, keyFile, caFile string) *StunnelClient {
	t.Helper()
	return startStunnel(t, "", connect, certFile, keyFile, caFile)
}

// startStunnel runs one stunnel4 service; mode is the service's extra
// configuration line ("client = yes\n" for client mode, empty for server).
func startStunnel(t testing.TB, mode, connect, certFile, keyFile, caFile string) *StunnelClient {
	t.Helper()
	Require(t, "stunnel4")
	dir := t.TempDir()
	s := &StunnelClient{}
	conf := filepath.Join(dir, "stunnel.conf")
	var addrs []string
	s.Process, addrs = StartListening(t, 1, "stunnel4", func(addrs []string) []string {
		writeFile(t, conf, fmt.Sprintf(`foreground = yes
pid =
debug = 4
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[dicom]
%saccept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
`, mode, addrs[0], connect, certFile, keyFile, caFile))
		return []string{conf}
	})
	s.Accept = addrs[0]
	return s
}

// StoreSCP is a running DCMTK storescp writing received instances, exactly as
// received (+B, bit-preserving), into Dir.
type StoreSCP struct {
	AETitle string
	Addr    string
	Dir     string
	*Process
}

// StartStoreSCP runs storescp on a free loopback port. extra arguments are
// added before the port (e.g. "--max-pdu", "16384").
func StartStoreSCP(t testing.TB, aet string, extra ...string) *StoreSCP {
	t.Helper()
	Require(t, "storescp")
	s := &StoreSCP{AETitle: aet, Dir: t.TempDir()}
	var addrs []string
	s.Process, addrs = StartListening(t, 1, "storescp", func(addrs []string) []string {
		args := []string{"-aet", aet, "-od", s.Dir, "+B", "--accept-all"}
		args = append(args, extra...)
		return append(args, fmt.Sprint(port(addrs[0])))
	})
	s.Addr = addrs[0]
	return s
}

// Received returns the data sets of every file storescp has written, keyed
// by SOP instance UID.
func (s *StoreSCP) Received(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		ds, uid, err := SplitPart10(b)
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		out[uid] = ds
	}
	return out
}

func itoa(n int) string { return fmt.Sprint(n) }

// Count returns how many files storescp has started writing.
func (s *StoreSCP) Count() int {
	entries, _ := os.ReadDir(s.Dir)
	return len(entries)
}

// HAProxyRoute is one TCP frontend of StartHAProxy: everything accepted is
// passed to Server, with a PROXY protocol v2 header first when SendProxyV2.
type HAProxyRoute struct {
	Server      string
	SendProxyV2 bool
}

// StartHAProxy runs one HAProxy (mode tcp) with a loopback frontend per
// route and returns the frontends' addresses in the order of routes.
func StartHAProxy(t testing.TB, routes ...HAProxyRoute) (*Process, []string) {
	t.Helper()
	bin := "haproxy"
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		bin = "/usr/sbin/haproxy"
	}
	Require(t, bin)
	conf := filepath.Join(t.TempDir(), "haproxy.cfg")
	return StartListening(t, len(routes), bin, func(addrs []string) []string {
		var b strings.Builder
		b.WriteString("global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n")
		for i, r := range routes {
			pp := ""
			if r.SendProxyV2 {
				pp = " send-proxy-v2"
			}
			fmt.Fprintf(&b, "listen route%d\n  bind %s\n  server s%d %s%s\n", i, addrs[i], i, r.Server, pp)
		}
		writeFile(t, conf, b.String())
		return []string{"-db", "-f", conf}
	})
}

// QRSCP is a running DCMTK dcmqrscp: a query/retrieve SCP whose C-FIND
// answers fill Retrieve AE Title (0008,0054) with its own AE title.
type QRSCP struct {
	AETitle string
	Addr    string
	*Process
}

// StartQRSCP runs dcmqrscp on a free loopback port with one storage area
// for aet, writable (load it with storescu called aet).
func StartQRSCP(t testing.TB, aet string) *QRSCP {
	t.Helper()
	Require(t, "dcmqrscp")
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	if err := os.MkdirAll(db, 0o755); err != nil {
		t.Fatal(err)
	}
	q := &QRSCP{AETitle: aet}
	var addrs []string
	q.Process, addrs = StartListening(t, 1, "dcmqrscp", func(addrs []string) []string {
		cfg := filepath.Join(dir, "dcmqrscp.cfg")
		writeFile(t, cfg, fmt.Sprintf(`NetworkTCPPort  = %d
MaxPDUSize      = 16384
MaxAssociations = 16
HostTable BEGIN
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
%s %s RW (200, 1024mb) ANY
AETable END
`, port(addrs[0]), aet, db))
		return []string{"-c", cfg}
	})
	q.Addr = addrs[0]
	return q
}
