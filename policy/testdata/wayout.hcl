# The way out: the PACS sends through the plain inside listener to an outside
# workstation over TLS; outside clients come in on the TLS listeners.
edge {
  listen = "127.0.0.1:2762"
}

listener "inside" {
  listen     = "10.0.0.2:11112"
  tls        = false
  allow_cidr = ["10.0.0.0/24"]
}

listener "partners" {
  listen = "127.0.0.1:2763"
}

tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}

backend "pacs" {
  address  = "10.0.0.5:104"
  ae_title = "MAINPACS"
}

backend "clinic-a-ws1" {
  address  = "ws1.clinic-a.example.org:2762"
  ae_title = "CLINA_WS1"
  tls {
    ca        = ["clinic-a-ca.pem"]
    cert_file = "edge-client.pem"
    key_file  = "edge-client-key.pem"
  }
}

rule "pacs-to-clinic-a" {
  when {
    listener    = ["inside"]
    source_cidr = ["10.0.0.5/32"]
    calling_ae  = ["MAINPACS"]
    called_ae   = ["CLINA_WS1"]
  }
  relay {
    backend  = "clinic-a-ws1"
    services = ["C-ECHO", "C-STORE"]
  }
}

rule "clinic-a" {
  when {
    client_cn  = ["*.clinic-a.example.org"]
    calling_ae = ["CLINA_*"]
    called_ae  = ["MAINPACS"]
  }
  relay {
    backend           = "pacs"
    services          = ["C-ECHO", "C-FIND", "C-MOVE"]
    move_destinations = ["CLINA_WS1"]
  }
}

rule "echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}

rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
