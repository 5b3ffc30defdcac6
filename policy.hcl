# dicomedge example configuration and policy.
#
# `go run ./cmd/dicomedge serve --dev` runs this file as it is: --dev first creates a development PKI in
# certs/ (a CA, the edge's certificate and a client certificate named "client") when it is missing.
# Try it with DCMTK:
#
#   TCP_NODELAY=1 echoscu +tls certs/client-key.pem certs/client.pem +cf certs/ca.pem \
#       -aet MODALITY1 -aec DICOMEDGE localhost 2762

edge {
  ae_title         = "DICOMEDGE"
  listen           = "127.0.0.1:2762"   # DICOM over TLS; use ":2762" to accept from the network
  admin_listen     = "127.0.0.1:9102"   # /metrics, /healthz, /readyz
  max_pdu_length   = 1048576
  max_associations = 512
  artim_timeout    = "30s"
  idle_timeout     = "10m"
  drain_timeout    = "30s"
}

tls {
  profile   = "bcp195-rfc8996"
  client_ca = ["certs/ca.pem"]          # every client must present a certificate chaining to this CA
  cert_file = "certs/edge.pem"
  key_file  = "certs/edge-key.pem"
}

audit {
  file        = "audit/audit.jsonl"
  patient_ids = "hash"
  fsync       = "1s"
}

# The PACS inside the hospital network. It speaks plain DICOM; the edge adds TLS on the outside.
backend "pacs" {
  address  = "127.0.0.1:11112"
  ae_title = "MAINPACS"
}

# Development clients may verify connectivity with the edge itself.
rule "echo" {
  when {
    client_cn = ["client"]
    called_ae = ["DICOMEDGE"]
  }
  answer {}
}

# Modalities of the development clients may store to the PACS and query it.
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

# Everything else is refused: A-ASSOCIATE-RJ, permanent, calling AE title not recognized.
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
