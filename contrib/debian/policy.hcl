# /etc/dicomedge/policy.hcl: the configuration and policy of the dicomedge service (installed by the
# Debian package; dpkg keeps your edits across upgrades). The reference is /usr/share/doc/dicomedge/docs/policy.md.
#
# The service is enabled but was not started: edit this file first, then
#
#   dicomedge policy check --config /etc/dicomedge/policy.hcl    # file:line:col for every problem
#   systemctl start dicomedge
#
# Until then it does not start: its ExecStartPre runs the same check, which fails on the certificate files
# below until they exist. After later edits, `systemctl reload dicomedge` (SIGHUP) applies the policy and
# certificates without dropping open associations; an invalid policy is refused and the old one stays.
#
# Relative file names are read from this directory. The service runs as the user dicomedge, which reads
# /etc/dicomedge (keep keys root:dicomedge, mode 0640) and writes only /var/lib/dicomedge.

edge {
  ae_title         = "DICOMEDGE"      # the edge's own AE title, when it answers as SCP
  listen           = ":2762"          # DICOM over TLS, the registered port, on every address
  admin_listen     = "127.0.0.1:9102" # /metrics, /healthz, /readyz: keep it on loopback or a management network
  max_pdu_length   = 1048576          # bytes; larger PDUs are refused with an A-ABORT
  max_associations = 512              # all clients together
  artim_timeout    = "30s"            # TLS handshake + A-ASSOCIATE-RQ must arrive within this
  idle_timeout     = "10m"            # an association silent this long is aborted
  drain_timeout    = "30s"            # on stop, open associations may finish for this long (the unit allows 60s)
  proxy_protocol   = []               # load balancers (CIDRs) allowed to send a PROXY protocol header
}

tls {
  profile   = "bcp195-rfc8996"        # DICOM PS3.15 Annex B: TLS 1.2+, BCP 195 cipher suites
  client_ca = ["certs/client-ca.pem"] # REQUIRED: the CA(s) that sign your clinics' and modalities' certificates
  # crl     = ["certs/client-ca.crl"] # revoked client certificates then fail the handshake (refresh it before NextUpdate)
  cert_file = "certs/edge.pem" # the edge's certificate chain (PEM) and key, readable by group dicomedge ...
  key_file  = "certs/edge-key.pem"
  # ... or, instead of cert_file/key_file, from an ACME CA:
  # acme {
  #   domains = ["edge.hospital.example.org"]
  #   email   = "pacs-admins@hospital.example.org"
  #   storage = "/var/lib/dicomedge/acme"
  # }
  warn_expiry = "14d" # a client certificate this close to expiry: tls.expiring once a day, and a metric
}

audit {
  file        = "/var/lib/dicomedge/audit/audit.jsonl" # append-only, hash-chained; `dicomedge audit verify` checks it
  patient_ids = "hash"                                 # omit | hash | plain
  fsync       = "1s"
  on_full     = "block" # block: never lose a record | drop: never stall DICOM traffic
  # syslog {                                  # also send every event to the hospital's collector (ATNA)
  #   address = "siem.hospital.example.org:6514" # RFC 5424 over mutual TLS
  #   format  = "atna"
  #   ca      = ["certs/siem-ca.pem"]
  # }
}

# The PACS inside the hospital network, in plain DICOM (add a tls block for TLS to it as well).
backend "pacs" {
  address  = "pacs.hospital.example.org:104"
  ae_title = "MAINPACS"
}

# Rules are tried in order; the first whose `when` matches decides. An example for a clinic's modalities:
#
# rule "clinic-a-modalities" {
#   when {
#     client_cn  = ["*.clinic-a.example.org"] # the certificate's CN (also client_dns, client_uri, client_fingerprint)
#     calling_ae = ["CLINA_*"]
#     called_ae  = ["MAINPACS"]
#   }
#   relay {
#     backend  = "pacs"
#     services = ["C-ECHO", "C-STORE"]
#   }
# }

# Any verified client may check the connection with C-ECHO to the edge's own AE title.
rule "echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}

# Everything else is refused (A-ASSOCIATE-RJ, audited).
rule "deny" {
  reject { reason = "called-ae-not-recognized" }
}
