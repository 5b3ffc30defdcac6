# v1.hcl edited: the test cases in cases.tests.hcl no longer all hold.
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}

backend "pacs" {
  address  = "127.0.0.1:11112"
  ae_title = "MAINPACS"
}

backend "archive" {
  address  = "127.0.0.1:11113"
  ae_title = "ARCHIVE"
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
