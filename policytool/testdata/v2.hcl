# v1.hcl edited: the test cases in cases.tests.hcl no longer all hold.
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
  when {
    called_ae = ["DICOMEDGE"]
    client_cn = ["*.example.org"]
  }
  answer {}
}

rule "clinic-a" {
  when {
    client_cn  = ["*.clinic-a.example.org"]
    calling_ae = ["CLINA_*"]
  }
  relay {
    backend  = "pacs"
    services = ["C-ECHO", "C-STORE", "C-FIND"]
  }
}

rule "research" {
  when { client_cn = ["*.research.example.org"] }
  relay {
    backend  = "pacs"
    services = ["C-FIND", "C-MOVE"]
  }
}

rule "busy" {
  when { called_ae = ["LATER"] }
  reject {
    reason    = "no-reason"
    transient = true
  }
}

rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
}
