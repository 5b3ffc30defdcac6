package policy

import (
	"net/netip"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Config is the whole of policy.hcl after decoding, validation and
// compilation. Relative file paths in it are already resolved against the
// directory of the file they came from. A Config is immutable once returned:
// share it between goroutines and replace it as a whole on reload.
type Config struct {
	Filename string // the file it was loaded from
	Edge     Edge
	TLS      TLS
	Audit    Audit
	// Listeners are every listener the edge serves, in file order: first
	// the edge block's own TLS listener, named "edge", then each listener
	// block.
	Listeners []*Listener
	Backends  map[string]*Backend // by name
	// Deidentify are the deidentify blocks by name, compiled (key read).
	Deidentify map[string]*Deidentify
	Policy     *Policy // compiled rules
	// Spool is the spool block, with its defaults when absent: where
	// store-and-forward rules keep instances until delivered.
	Spool Spool
	Admin Admin                // the admin block (the web console)
	Files map[string]*hcl.File // parsed sources, for WriteDiagnostics
}

// Edge is the edge block: the listener and its limits.
type Edge struct {
	AETitle         string // default "DICOMEDGE"
	Listen          string // default ":2762"
	AdminListen     string // "" = no admin listener
	MaxPDULength    uint32 // default 1 MiB
	MaxAssociations int    // default 512
	// MaxAssociationsPerClient bounds the associations one client holds
	// (by certificate fingerprint; by source address on a plain
	// listener); default DefaultMaxAssociationsPerClient(MaxAssociations).
	MaxAssociationsPerClient int
	ARTIMTimeout             time.Duration  // default 30s
	IdleTimeout              time.Duration  // default 10m
	DrainTimeout             time.Duration  // default 30s
	ProxyProtocol            []netip.Prefix // load balancers allowed to send a PROXY header; empty = none
}

// EdgeListener is the name of the edge block's own TLS listener.
const EdgeListener = "edge"

// Listener is one address the edge accepts DICOM on: the edge block's own
// (named "edge", always TLS) or a listener "<name>" block.
type Listener struct {
	Name   string
	Listen string // host:port
	// TLS: the tls block applies (mutual TLS, clients identified by
	// certificate). A plain listener (TLS false) speaks DICOM without TLS,
	// accepts only AllowCIDR and identifies a client by its source address.
	TLS           bool
	AllowCIDR     []netip.Prefix // empty = any source (TLS listeners only)
	ProxyProtocol []netip.Prefix // load balancers allowed to send a PROXY header
}

// Plain reports whether the listener speaks DICOM without TLS.
func (l *Listener) Plain() bool { return !l.TLS }

// AllowsSource reports whether a connection from ip may be served: always
// when AllowCIDR is empty, else when ip is in one of its networks.
func (l *Listener) AllowsSource(ip netip.Addr) bool {
	if len(l.AllowCIDR) == 0 {
		return true
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range l.AllowCIDR {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Listener returns the listener named name ("" is "edge"), or nil.
func (c *Config) Listener(name string) *Listener {
	if name == "" {
		name = EdgeListener
	}
	for _, l := range c.Listeners {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// TLS is the tls block: the edge's certificate and how clients are verified.
type TLS struct {
	Profile  string   // PS3.15 Annex B profile name, default "bcp195-rfc8996"
	ClientCA []string // PEM files, at least one
	CRL      []string // PEM or DER files, optional
	CertFile string   // set together with KeyFile, or ACME is set instead
	KeyFile  string
	ACME     *ACME // nil when the certificate comes from files
	// WarnExpiry: a client certificate that expires within this gets one
	// tls.expiring record a day; default DefaultWarnExpiry, 0 = none.
	WarnExpiry time.Duration
}

// ACME is the tls.acme block: the edge's certificate from an ACME CA.
type ACME struct {
	Domains   []string
	Email     string
	Directory string   // default Let's Encrypt's production directory
	CARoots   []string // PEM files of roots that sign the ACME server itself
	Storage   string   // certmagic storage directory; default DefaultACMEStorage beside the policy file
	HTTPPort  int      // 0 = no HTTP-01 challenge listener (TLS-ALPN-01 on the listener)
	DNS       *ACMEDNS // nil = TLS-ALPN-01 (or HTTP-01); set = DNS-01 only
}

// ACMEDNS is tls.acme.dns: the DNS-01 challenge (RFC 8555 section 8.4),
// needed for "*." domains and where the CA cannot reach the edge. Exactly
// one provider block is set.
type ACMEDNS struct {
	RFC2136 *RFC2136
}

// RFC2136 is tls.acme.dns.rfc2136: the challenge's TXT record is written by
// a dynamic update (RFC 2136) signed with a TSIG key (RFC 8945).
type RFC2136 struct {
	Server        string // host:port of the primary server that takes updates
	KeyName       string // TSIG key name, fully qualified, lower case ("dicomedge-acme.")
	KeyAlg        string // "hmac-sha256", ... (TSIGAlgorithms)
	KeySecretFile string
	KeySecret     Secret // base64, read from KeySecretFile at load
	Zone          string // fully qualified, lower case ("example.org.")
}

// Secret is a credential read from a file. It prints as "[redacted]" so that
// a Config dumped with %v or %+v never shows it.
type Secret string

func (Secret) String() string   { return "[redacted]" }
func (Secret) GoString() string { return `"[redacted]"` }

// Audit is the audit block.
type Audit struct {
	File       string        // default "var/audit/audit.jsonl" next to the config file
	PatientIDs string        // "omit" | "hash" | "plain", default "hash"
	Fsync      time.Duration // default 1s; 0 = after every record
	OnFull     string        // "block" | "drop", default "block"
	Syslog     *Syslog       // nil = no collector
}

// Syslog is the audit.syslog block: RFC 5424 over TLS to a collector.
type Syslog struct {
	Address string   // host:port
	Format  string   // "atna" | "json", default "atna"
	CA      []string // PEM files; empty = the system roots
	// CertFile and KeyFile are the client certificate the edge presents;
	// empty = the edge's own certificate (the tls block's, or ACME's).
	CertFile string
	KeyFile  string
}

// Backend is a backend "<name>" block: a PACS the edge relays to.
type Backend struct {
	Name    string
	Address string // host:port
	AETitle string
	TLS     *BackendTLS // nil = plain DICOM
	// DICOMweb makes the backend a STOW-RS destination (PS3.18 10.5);
	// Address and TLS are then unset, and every rule to it is
	// store-and-forward.
	DICOMweb *DICOMweb
}

// Spool is the spool block.
type Spool struct {
	Dir     string        // default DefaultSpoolDir beside the policy file
	MaxSize int64         // bytes; default DefaultSpoolMaxSize
	MaxAge  time.Duration // default DefaultSpoolMaxAge
}

// DICOMweb is a backend's dicomweb block.
type DICOMweb struct {
	URL       string   // the service's base URL; STOW-RS posts to URL + "/studies"
	CA        []string // PEM files; empty = the system roots
	CertFile  string   // client certificate for mutual TLS, optional
	KeyFile   string
	TokenFile string  // a bearer token, re-read when it changes; optional
	OAuth2    *OAuth2 // client credentials grant; optional
}

// OAuth2 is the dicomweb.oauth2 block: the client credentials grant
// (RFC 6749 4.4).
type OAuth2 struct {
	TokenURL         string
	ClientID         string
	ClientSecretFile string
	Scopes           []string
}

// BackendTLS is the backend.tls block.
type BackendTLS struct {
	CA         []string // PEM files; empty = the system roots
	CertFile   string   // client certificate the edge presents, optional
	KeyFile    string
	ServerName string // "" = the host part of Address
}

// Input is what a decision is made on: the verified client certificate,
// where the connection came from and what the A-ASSOCIATE-RQ claims.
type Input struct {
	// Listener is the name of the listener the request arrived on; "" is
	// the edge block's TLS listener, "edge". On a plain listener (and on a
	// name the policy does not know) only rules that name it in
	// when.listener can match, and client_* attributes never do.
	Listener    string
	CN          string
	DNS         []string
	URI         []string
	Email       []string
	Fingerprint string // "sha256:<hex>" of the leaf certificate
	SourceIP    netip.Addr
	CallingAE   string
	CalledAE    string
}

// Action is what a rule does with an association.
type Action uint8

const (
	ActionReject Action = iota // A-ASSOCIATE-RJ
	ActionAnswer               // the edge answers as SCP (Verification)
	ActionRelay                // relay to a backend
)

func (a Action) String() string {
	switch a {
	case ActionReject:
		return "reject"
	case ActionAnswer:
		return "answer"
	case ActionRelay:
		return "relay"
	}
	return "unknown"
}

// Reject holds the A-ASSOCIATE-RJ fields (PS3.8 9.3.4): Result 1 permanent
// or 2 transient, Source 1 (service user) and its Reason.
type Reject struct {
	Result     uint8
	Source     uint8
	Reason     uint8
	ReasonName string // the policy.hcl name, e.g. "calling-ae-not-recognized"
}

// Decision is the outcome of Evaluate. It shares the compiled policy's
// memory: callers must not modify its slices.
type Decision struct {
	Rule    string // "" when no rule matched
	Action  Action
	Backend *Backend // relay only
	Reject  Reject   // reject only

	// Relay permissions as written in the rule, for logs and explain output.
	// Services nil = every service; SOPClasses nil = every SOP class;
	// MoveDestinations nil = no C-MOVE destination at all.
	Services         []string
	SOPClasses       []string
	MoveDestinations []string
	// StoreAndForward: the edge receives the association itself (C-ECHO,
	// C-STORE), spools each instance and a forwarder delivers it to
	// Backend. Always set for a DICOMweb backend.
	StoreAndForward bool
	// AllowUnsortedDataSets lets C-STORE data sets whose top-level elements
	// are out of tag order, or repeat a tag (PS3.5 7.1), pass (each one
	// audited); without it they abort the association (malformed-data-set).
	AllowUnsortedDataSets bool
	// Deidentify, when set, is the profile the relay applies to every
	// C-STORE data set the requestor sends (docs/deidentify.md).
	Deidentify *Deidentify

	rule *rule // compiled permissions; nil when no rule matched
}

// Step is one rule considered by Explain.
type Step struct {
	Rule    string
	Matched bool
	Why     string    // e.g. `rule "clinic-a": calling_ae "CT9" does not match ["CLINA_*"]`
	Range   hcl.Range // where the rule is defined
}

// Explanation is a decision with the reasons for it.
type Explanation struct {
	Decision Decision
	Steps    []Step // every rule tried, in file order, up to and including the match
}

// Admin is the admin block.
type Admin struct {
	Console *Console // nil = no console: admin_listen serves /metrics, /healthz, /readyz only
}

// Console is the admin.console block: who may use the web console on
// edge.admin_listen, and how they prove it.
type Console struct {
	// ClientCA are PEM files: with any, the admin listener also speaks
	// HTTPS and a client certificate chaining to one of them logs in.
	ClientCA []string
	Users    []ConsoleUser // in file order
}

// Console roles: a viewer reads every page; an operator may also act
// (reload the policy, retry or purge the spool).
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
)

// ConsoleUser is an admin.console.user block.
type ConsoleUser struct {
	Name         string
	PasswordHash string // argon2id or bcrypt, checked by console/password
	Role         string // RoleViewer or RoleOperator
}
