# A policy with many rules, one per kind of condition, for TestDecisions.
tls {
  client_ca = ["ca.pem"]
  cert_file = "edge.pem"
  key_file  = "edge-key.pem"
}

backend "pacs" {
  address  = "10.0.0.5:104"
  ae_title = "MAINPACS"
}

backend "research" {
  address  = "10.0.0.9:11112"
  ae_title = "RESEARCH"
  tls {
    ca          = ["research-ca.pem"]
    server_name = "research.internal"
  }
}

rule "blocked-fingerprint" {
  when { client_fingerprint = ["sha256:AB:CD:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01"] }
  reject {
    reason    = "no-reason"
    transient = true
  }
}

rule "clinic-a" {
  when {
    client_cn   = ["*.clinic-a.example.org"]
    client_uri  = ["spiffe://example.org/clinic-a/*"]
    source_cidr = ["203.0.113.0/24", "2001:db8:a::/48"]
    calling_ae  = ["CLINA_*"]
    called_ae   = ["MAINPACS"]
  }
  relay {
    backend     = "pacs"
    services    = ["C-ECHO", "C-STORE", "C-FIND"]
  }
}

rule "ai-vendor" {
  when {
    client_dns = ["ai.vendor.example", "*.ai.vendor.example"]
    calling_ae = ["AI??"]
  }
  relay {
    backend           = "research"
    services          = ["C-FIND", "C-MOVE", "C-GET"]
    sop_classes       = ["1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3"]
    move_destinations = ["AI_STORE", "AI_*_SCP"]
  }
}

rule "teleradiology" {
  when {
    client_email = ["*@telerad.example"]
    called_ae    = ["MAINPACS", "RESEARCH"]
  }
  relay { backend = "pacs" }
}

rule "echo" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}

rule "unknown-called" {
  when {
    calling_ae = ["LEGACY*"]
    called_ae  = ["*"]
  }
  reject { reason = "called-ae-not-recognized" }
}
