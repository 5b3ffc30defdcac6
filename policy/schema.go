package policy

import "github.com/hashicorp/hcl/v2"

// The gohcl schema of policy.hcl. Blocks that may appear once are still
// slices, so that the loader reports a duplicate itself and goes on checking
// the first one instead of losing it (gohcl drops both). Attributes are *hcl.Attribute so that the
// loader knows whether each was given and where, and can point a diagnostic at
// the exact value (or list element) that is wrong; gohcl still refuses
// unknown attributes and blocks because no struct here has a remain field.

type fileSchema struct {
	Edge     []*edgeSchema     `hcl:"edge,block"`
	TLS      []*tlsSchema      `hcl:"tls,block"`
	Audit    []*auditSchema    `hcl:"audit,block"`
	Listener []*listenerSchema `hcl:"listener,block"`
	Backends []*backendSchema  `hcl:"backend,block"`
	Rules    []*ruleSchema     `hcl:"rule,block"`
	Spool    []*spoolSchema    `hcl:"spool,block"`
	Deid     []*deidSchema     `hcl:"deidentify,block"`
	Admin    []*adminSchema    `hcl:"admin,block"`
}

type edgeSchema struct {
	AETitle           *hcl.Attribute `hcl:"ae_title,optional"`
	Listen            *hcl.Attribute `hcl:"listen,optional"`
	AdminListen       *hcl.Attribute `hcl:"admin_listen,optional"`
	MaxPDULength      *hcl.Attribute `hcl:"max_pdu_length,optional"`
	MaxAssociations   *hcl.Attribute `hcl:"max_associations,optional"`
	MaxAssocPerClient *hcl.Attribute `hcl:"max_associations_per_client,optional"`
	ARTIMTimeout      *hcl.Attribute `hcl:"artim_timeout,optional"`
	IdleTimeout       *hcl.Attribute `hcl:"idle_timeout,optional"`
	DrainTimeout      *hcl.Attribute `hcl:"drain_timeout,optional"`
	ProxyProtocol     *hcl.Attribute `hcl:"proxy_protocol,optional"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

type listenerSchema struct {
	Name          string         `hcl:"name,label"`
	NameRange     hcl.Range      `hcl:"name,label_range"`
	Listen        *hcl.Attribute `hcl:"listen,optional"`
	TLS           *hcl.Attribute `hcl:"tls,optional"`
	AllowCIDR     *hcl.Attribute `hcl:"allow_cidr,optional"`
	ProxyProtocol *hcl.Attribute `hcl:"proxy_protocol,optional"`
	DefRange      hcl.Range      `hcl:",def_range"`
}

type tlsSchema struct {
	Profile  *hcl.Attribute `hcl:"profile,optional"`
	ClientCA *hcl.Attribute `hcl:"client_ca,optional"`
	CRL      *hcl.Attribute `hcl:"crl,optional"`
	CertFile *hcl.Attribute `hcl:"cert_file,optional"`
	KeyFile  *hcl.Attribute `hcl:"key_file,optional"`
	// WarnExpiry: client certificates this close to expiry are reported.
	WarnExpiry *hcl.Attribute `hcl:"warn_expiry,optional"`
	ACME       []*acmeSchema  `hcl:"acme,block"`
	DefRange   hcl.Range      `hcl:",def_range"`
}

type acmeSchema struct {
	Domains   *hcl.Attribute   `hcl:"domains,optional"`
	Email     *hcl.Attribute   `hcl:"email,optional"`
	Directory *hcl.Attribute   `hcl:"directory,optional"`
	CARoots   *hcl.Attribute   `hcl:"ca_roots,optional"`
	Storage   *hcl.Attribute   `hcl:"storage,optional"`
	HTTPPort  *hcl.Attribute   `hcl:"http_port,optional"`
	DNS       []*acmeDNSSchema `hcl:"dns,block"`
	DefRange  hcl.Range        `hcl:",def_range"`
}

// acmeDNSSchema is tls.acme.dns: the DNS-01 challenge, one block per provider.
type acmeDNSSchema struct {
	RFC2136  []*rfc2136Schema `hcl:"rfc2136,block"`
	DefRange hcl.Range        `hcl:",def_range"`
}

type rfc2136Schema struct {
	Server        *hcl.Attribute `hcl:"server,optional"`
	KeyName       *hcl.Attribute `hcl:"key_name,optional"`
	KeyAlg        *hcl.Attribute `hcl:"key_alg,optional"`
	KeySecretFile *hcl.Attribute `hcl:"key_secret_file,optional"`
	Zone          *hcl.Attribute `hcl:"zone,optional"`
	DefRange      hcl.Range      `hcl:",def_range"`
}

type auditSchema struct {
	File       *hcl.Attribute  `hcl:"file,optional"`
	PatientIDs *hcl.Attribute  `hcl:"patient_ids,optional"`
	Fsync      *hcl.Attribute  `hcl:"fsync,optional"`
	OnFull     *hcl.Attribute  `hcl:"on_full,optional"`
	Syslog     []*syslogSchema `hcl:"syslog,block"`
	DefRange   hcl.Range       `hcl:",def_range"`
}

type syslogSchema struct {
	Address  *hcl.Attribute `hcl:"address,optional"`
	Format   *hcl.Attribute `hcl:"format,optional"`
	CA       *hcl.Attribute `hcl:"ca,optional"`
	CertFile *hcl.Attribute `hcl:"cert_file,optional"`
	KeyFile  *hcl.Attribute `hcl:"key_file,optional"`
	DefRange hcl.Range      `hcl:",def_range"`
}

type backendSchema struct {
	Name      string              `hcl:"name,label"`
	NameRange hcl.Range           `hcl:"name,label_range"`
	Address   *hcl.Attribute      `hcl:"address,optional"`
	AETitle   *hcl.Attribute      `hcl:"ae_title,optional"`
	TLS       []*backendTLSSchema `hcl:"tls,block"`
	DICOMweb  []*dicomwebSchema   `hcl:"dicomweb,block"`
	DefRange  hcl.Range           `hcl:",def_range"`
}

type backendTLSSchema struct {
	CA         *hcl.Attribute `hcl:"ca,optional"`
	CertFile   *hcl.Attribute `hcl:"cert_file,optional"`
	KeyFile    *hcl.Attribute `hcl:"key_file,optional"`
	ServerName *hcl.Attribute `hcl:"server_name,optional"`
	DefRange   hcl.Range      `hcl:",def_range"`
}

type ruleSchema struct {
	Name      string          `hcl:"name,label"`
	NameRange hcl.Range       `hcl:"name,label_range"`
	When      []*whenSchema   `hcl:"when,block"`
	Relay     []*relaySchema  `hcl:"relay,block"`
	Answer    []*answerSchema `hcl:"answer,block"`
	Reject    []*rejectSchema `hcl:"reject,block"`
	DefRange  hcl.Range       `hcl:",def_range"`
}

// whenSchema's attributes are listed in the order Explain reports them.
type whenSchema struct {
	Listener          *hcl.Attribute `hcl:"listener,optional"`
	ClientCN          *hcl.Attribute `hcl:"client_cn,optional"`
	ClientDNS         *hcl.Attribute `hcl:"client_dns,optional"`
	ClientURI         *hcl.Attribute `hcl:"client_uri,optional"`
	ClientEmail       *hcl.Attribute `hcl:"client_email,optional"`
	ClientFingerprint *hcl.Attribute `hcl:"client_fingerprint,optional"`
	SourceCIDR        *hcl.Attribute `hcl:"source_cidr,optional"`
	CallingAE         *hcl.Attribute `hcl:"calling_ae,optional"`
	CalledAE          *hcl.Attribute `hcl:"called_ae,optional"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

type relaySchema struct {
	Backend          *hcl.Attribute `hcl:"backend,optional"`
	Services         *hcl.Attribute `hcl:"services,optional"`
	SOPClasses       *hcl.Attribute `hcl:"sop_classes,optional"`
	MoveDestinations *hcl.Attribute `hcl:"move_destinations,optional"`
	// AllowUnsortedDataSets: see Decision.AllowUnsortedDataSets.
	AllowUnsortedDataSets *hcl.Attribute `hcl:"allow_unsorted_data_sets,optional"`
	Deidentify            *hcl.Attribute `hcl:"deidentify,optional"`
	StoreAndForward       *hcl.Attribute `hcl:"store_and_forward,optional"`
	DefRange              hcl.Range      `hcl:",def_range"`
}

type deidSchema struct {
	Name      string         `hcl:"name,label"`
	NameRange hcl.Range      `hcl:"name,label_range"`
	Profile   *hcl.Attribute `hcl:"profile,optional"`
	Options   *hcl.Attribute `hcl:"options,optional"`
	KeyFile   *hcl.Attribute `hcl:"key_file,optional"`
	Keep      *hcl.Attribute `hcl:"keep,optional"`
	Remove    *hcl.Attribute `hcl:"remove,optional"`
	Replace   *hcl.Attribute `hcl:"replace,optional"`
	BurnedIn  *hcl.Attribute `hcl:"burned_in,optional"`
	DefRange  hcl.Range      `hcl:",def_range"`
}

type answerSchema struct {
	DefRange hcl.Range `hcl:",def_range"`
}

type rejectSchema struct {
	Reason    *hcl.Attribute `hcl:"reason,optional"`
	Transient *hcl.Attribute `hcl:"transient,optional"`
	DefRange  hcl.Range      `hcl:",def_range"`
}

// ranged is a block with a definition range, for duplicate-block reports.
type ranged interface{ defRange() hcl.Range }

func (s *edgeSchema) defRange() hcl.Range       { return s.DefRange }
func (s *tlsSchema) defRange() hcl.Range        { return s.DefRange }
func (s *auditSchema) defRange() hcl.Range      { return s.DefRange }
func (s *acmeSchema) defRange() hcl.Range       { return s.DefRange }
func (s *syslogSchema) defRange() hcl.Range     { return s.DefRange }
func (s *acmeDNSSchema) defRange() hcl.Range    { return s.DefRange }
func (s *rfc2136Schema) defRange() hcl.Range    { return s.DefRange }
func (s *backendTLSSchema) defRange() hcl.Range { return s.DefRange }
func (s *whenSchema) defRange() hcl.Range       { return s.DefRange }
func (s *relaySchema) defRange() hcl.Range      { return s.DefRange }
func (s *answerSchema) defRange() hcl.Range     { return s.DefRange }
func (s *rejectSchema) defRange() hcl.Range     { return s.DefRange }

type spoolSchema struct {
	Dir      *hcl.Attribute `hcl:"dir,optional"`
	MaxSize  *hcl.Attribute `hcl:"max_size,optional"`
	MaxAge   *hcl.Attribute `hcl:"max_age,optional"`
	DefRange hcl.Range      `hcl:",def_range"`
}

type dicomwebSchema struct {
	URL       *hcl.Attribute  `hcl:"url,optional"`
	CA        *hcl.Attribute  `hcl:"ca,optional"`
	CertFile  *hcl.Attribute  `hcl:"cert_file,optional"`
	KeyFile   *hcl.Attribute  `hcl:"key_file,optional"`
	TokenFile *hcl.Attribute  `hcl:"token_file,optional"`
	OAuth2    []*oauth2Schema `hcl:"oauth2,block"`
	DefRange  hcl.Range       `hcl:",def_range"`
}

type oauth2Schema struct {
	TokenURL         *hcl.Attribute `hcl:"token_url,optional"`
	ClientID         *hcl.Attribute `hcl:"client_id,optional"`
	ClientSecretFile *hcl.Attribute `hcl:"client_secret_file,optional"`
	Scopes           *hcl.Attribute `hcl:"scopes,optional"`
	DefRange         hcl.Range      `hcl:",def_range"`
}

func (s *spoolSchema) defRange() hcl.Range    { return s.DefRange }
func (s *dicomwebSchema) defRange() hcl.Range { return s.DefRange }
func (s *oauth2Schema) defRange() hcl.Range   { return s.DefRange }

// adminSchema is the admin block: the web console on edge.admin_listen.
type adminSchema struct {
	Console  []*consoleSchema `hcl:"console,block"`
	DefRange hcl.Range        `hcl:",def_range"`
}

type consoleSchema struct {
	ClientCA *hcl.Attribute `hcl:"client_ca,optional"`
	Users    []*userSchema  `hcl:"user,block"`
	DefRange hcl.Range      `hcl:",def_range"`
}

type userSchema struct {
	Name         string         `hcl:"name,label"`
	NameRange    hcl.Range      `hcl:"name,label_range"`
	PasswordHash *hcl.Attribute `hcl:"password_hash,optional"`
	Role         *hcl.Attribute `hcl:"role,optional"`
	DefRange     hcl.Range      `hcl:",def_range"`
}

func (s *adminSchema) defRange() hcl.Range   { return s.DefRange }
func (s *consoleSchema) defRange() hcl.Range { return s.DefRange }
