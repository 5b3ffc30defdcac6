# The policy the test cases in cases.tests.hcl were written for.
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}

# The way out: the PACS sends to clinic A's workstation through a plain inside listener.
listener "inside" {
  listen     = "127.0.0.1:11114"
  tls        = false
  allow_cidr = ["10.0.0.0/24"]
}

backend "clinic-a-ws1" {
  address  = "127.0.0.1:11115"
  ae_title = "CLINA_WS1"
}

backend "pacs" {
  address  = "127.0.0.1:11112"
  ae_title = "MAINPACS"
}

backend "archive" {
  address  = "127.0.0.1:11113"
  ae_title = "ARCHIVE"
}

rule "pacs-out" {
  when {
    listener   = ["inside"]
    calling_ae = ["MAINPACS"]
    called_ae  = ["CLINA_WS1"]
  }
  relay {
    backend  = "clinic-a-ws1"
    services = ["C-ECHO", "C-STORE"]
  }
}

rule "echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}

rule "clinic-a" {
  when {
    client_cn   = ["*.clinic-a.example.org"]
    source_cidr = ["203.0.113.0/24"]
    calling_ae  = ["CLINA_*"]
  }
  relay {
    backend           = "pacs"
    services          = ["C-ECHO", "C-STORE", "C-FIND", "C-MOVE"]
    move_destinations = ["CLINA_WS1"]
  }
}

rule "research" {
  when { client_cn = ["*.research.example.org"] }
  relay {
    backend  = "archive"
    services = ["C-FIND"]
  }
}

rule "busy" {
  when { called_ae = ["LATER"] }
  reject {
    reason    = "called-ae-not-recognized"
    transient = true
  }
}

rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
