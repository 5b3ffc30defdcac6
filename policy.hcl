# dicomedge example configuration and policy.
#
# `go run ./cmd/dicomedge serve --dev` runs this file as it is: --dev first creates a development PKI in
# certs/ (a CA, the edge's certificate and a client certificate named "client") when it is missing.
# Try it with DCMTK (the edge answers C-ECHO itself, rule "echo"):
#
#   TCP_NODELAY=1 echoscu +tls certs/client-key.pem certs/client.pem +cf certs/ca.pem \
#       -aet MODALITY1 -aec DICOMEDGE localhost 2762
#
# `dicomedge policy check` validates this file; `dicomedge policy explain --cert certs/client.pem
# --calling-ae MODALITY1 --called-ae MAINPACS` shows which rule decides and why the others do not.
# Relative file names are read from the directory this file is in; what a run writes (the audit log)
# goes to var/, which git ignores. `dicomedge audit` (run here) reads that log.

edge {
  ae_title         = "DICOMEDGE"      # the edge's own AE title, when it answers as SCP
  listen           = "127.0.0.1:2762" # DICOM over TLS; use ":2762" to accept from the network
  admin_listen     = "127.0.0.1:9102" # /metrics, /healthz, /readyz; leave out for none
  max_pdu_length   = 1048576          # bytes; larger PDUs are refused with an A-ABORT
  max_associations = 512              # all clients together
  artim_timeout    = "30s"            # TLS handshake + A-ASSOCIATE-RQ must arrive within this
  idle_timeout     = "10m"            # an association silent this long is aborted
  drain_timeout    = "30s"            # on SIGTERM, open associations may finish for this long
  proxy_protocol   = []               # load balancers (CIDRs) allowed to send a PROXY protocol header
  # max_associations_per_client = 128: one client (certificate) at most; default max_associations / 4
}

tls {
  profile   = "bcp195-rfc8996" # DICOM PS3.15 Annex B: TLS 1.2+, BCP 195 cipher suites
  client_ca = ["certs/ca.pem"] # required: every client must present a certificate chaining to this CA
  # crl     = ["certs/ca.crl"]          # revoked client certificates then fail the handshake
  cert_file = "certs/edge.pem" # the edge's own certificate and key ...
  key_file  = "certs/edge-key.pem"
  # ... or, instead of cert_file/key_file, from an ACME CA such as Let's Encrypt:
  # acme {
  #   domains = ["edge.example.org"]
  #   email   = "pacs-admins@example.org"
  #   storage = "/var/lib/dicomedge/acme"
  # }
  # warn_expiry = "14d"          # a client certificate this close to expiry: tls.expiring once a day (0 = never)
}

audit {
  file        = "var/audit/audit.jsonl" # append-only, hash-chained; `dicomedge audit verify` checks it
  patient_ids = "hash"                  # omit | hash | plain
  fsync       = "1s"
  on_full     = "block" # block: never lose a record | drop: never stall DICOM traffic
  # syslog {                            # also send every event to the hospital's collector
  #   address = "siem.example.org:6514" # RFC 5424 over TLS
  #   format  = "atna"                  # DICOM PS3.15 A.5 audit messages, or "json"
  #   ca      = ["certs/siem-ca.pem"]
  #   # the edge presents its own certificate (above) unless cert_file/key_file name another
  # }                                   # forwarding follows this file from a cursor: an outage loses nothing
}

# The PACS inside the hospital network. It speaks plain DICOM; the edge adds TLS on the outside.
# A relayed association's called AE title is rewritten to ae_title.
backend "pacs" {
  address  = "127.0.0.1:11112"
  ae_title = "MAINPACS"
}

# The way OUT (README, "Sending out through the edge"): the PACS sends plain DICOM to an inside listener, and
# the edge relays it over TLS, with its own client certificate, to an outside workstation. The PACS's AE table
# points CLINA_WS1 at the inside listener; C-MOVEs to CLINA_WS1 leave the same way.
#
# listener "inside" {
#   listen     = "127.0.0.1:11113"
#   tls        = false                # plain DICOM; clients known by address, not certificate
#   allow_cidr = ["127.0.0.1/32"]     # required when tls = false
# }
# backend "clinic-a-ws1" {
#   address  = "ws1.clinic-a.example.org:2762"
#   ae_title = "CLINA_WS1"
#   tls {
#     ca        = ["certs/clinic-a-ca.pem"]
#     cert_file = "certs/edge-client.pem"
#     key_file  = "certs/edge-client-key.pem"
#   }
# }
# rule "pacs-to-clinic-a" {         # rules without `listener` never apply on a plain listener
#   when {
#     listener   = ["inside"]
#     calling_ae = ["MAINPACS"]
#     called_ae  = ["CLINA_WS1"]
#   }
#   relay {
#     backend  = "clinic-a-ws1"
#     services = ["C-ECHO", "C-STORE"]
#   }
# }

# De-identified, the way out to an AI vendor (README, "Sending to an AI vendor, de-identified"; docs/deidentify.md):
# a rule with relay.deidentify rewrites every C-STORE data set it relays by DICOM PS3.15 Annex E (the Basic
# Application Level Confidentiality Profile and the options named) before it leaves; instances with burned-in
# annotation and encapsulated documents are refused, not sent. New UIDs, the patient pseudonym and the date shift
# derive from key_file: `serve --dev` creates this one (32 random bytes, mode 0600) in var/, which git ignores. In
# production keep the key beside the certificates and back it up: another key gives every study new UIDs and every
# patient a new pseudonym. Try a profile on files first:
#
#   dicomedge deidentify --profile ai-vendor --explain --out /tmp/deid study/*.dcm
deidentify "ai-vendor" {
  profile   = "basic"
  options   = ["retain-modified-dates", "retain-patient-characteristics", "clean-descriptors"]
  key_file  = "var/deid.key"
  keep      = []       # attributes kept as they came, e.g. "(0008,0060)" or "Modality"
  remove    = []       # attributes removed whatever the table says
  burned_in = "refuse" # refuse | pass
}
# With the "inside" listener above, the PACS's AE table points AIVENDOR at it (127.0.0.1:11113):
#
# backend "ai-vendor" {
#   address  = "dicom.ai-vendor.example:2762"
#   ae_title = "AIVENDOR"
#   tls {
#     ca        = ["certs/ai-vendor-ca.pem"]
#     cert_file = "certs/edge-client.pem"
#     key_file  = "certs/edge-client-key.pem"
#   }
# }
# rule "pacs-to-ai-vendor" {
#   when {
#     listener   = ["inside"]
#     calling_ae = ["MAINPACS"]
#     called_ae  = ["AIVENDOR"]
#   }
#   relay {
#     backend    = "ai-vendor"
#     services   = ["C-ECHO", "C-STORE"] # a de-identifying rule allows these two only
#     deidentify = "ai-vendor"
#   }
# }

# Rules are tried from top to bottom; the first whose `when` matches decides. In `when`, every
# attribute is a list (any element may match) and all attributes given must match; `*` and `?`
# are wildcards; certificate names compare case-insensitively, AE titles after trimming spaces.
# An association that no rule matches is rejected (permanent, calling AE title not recognized).

# Development clients may verify connectivity with the edge itself: C-ECHO, answered by the edge.
rule "echo" {
  when {
    client_cn = ["client"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}

# Modalities of the development clients may store to the PACS and query it; anything else they
# send on the association (C-MOVE, C-GET, N-...) is refused with status 0x0124.
rule "modalities-to-pacs" {
  when {
    client_cn  = ["client"]
    calling_ae = ["MODALITY*", "CT?"]
    called_ae  = ["MAINPACS"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE", "C-FIND"]
  }
}

# What a partner site looks like in production: its CA is in tls.client_ca, its modalities hold
# certificates named *.clinic-a.example.org and connect from its network. They may send images
# and retrieve prior studies to their own workstation only.
rule "clinic-a" {
  when {
    client_cn   = ["*.clinic-a.example.org"]
    source_cidr = ["203.0.113.0/24"]
    calling_ae  = ["CLINA_*"]
    called_ae   = ["MAINPACS"]
  }
  relay {
    backend           = "pacs"
    services          = ["C-ECHO", "C-STORE", "C-FIND", "C-MOVE"]
    move_destinations = ["CLINA_WS1"]
  }
}

# Everything else is refused: A-ASSOCIATE-RJ, permanent, calling AE title not recognized.
# Other reasons: no-reason, application-context-not-supported, called-ae-not-recognized;
# `transient = true` asks the caller to try again later.
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}

# The web console on admin_listen (docs/console.md). `serve --dev` serves it without this block, for a
# development operator whose password it prints. In production name who may sign in:
# admin {
#   console {
#     client_ca = ["certs/admin-ca.pem"]    # administrators' client certificates (HTTPS on admin_listen)
#     user "pacs-admin" {
#       password_hash = "$argon2id$..."     # `dicomedge admin passwd` prints it
#       role          = "operator"          # viewer | operator (may reload the policy)
#     }
#   }
# }
