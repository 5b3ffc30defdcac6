# Every mistake here is deliberate: TestDiagnosticsGolden checks that all of
# them are reported at once, each at its own file:line:col.
edge {
  ae_title       = "THIS_AE_TITLE_IS_TOO_LONG"
  listen         = "2762"
  artim_timeout  = "30 seconds"
  max_pdu_length = 100
  proxy_protocl  = []
}

tls {
  profile   = "tls13-only"
  cert_file = "certs/edge.pem"
}

audit {
  patient_ids = "masked"
  on_full     = "wait"
}

backend "pacs" {
  address  = "10.0.0.5:104"
  ae_title = "MAINPACS"
}

backend "pacs" {
  address  = "10.0.0.6:104"
  ae_title = "OTHERPACS"
}

rule "clinic-a" {
  when {
    source_cidr = ["203.0.113.0/33", "10.0.0.0/8"]
    calling_ae  = ["CLIN\\A"]
    client_cn   = 42
  }
  relay {
    backend  = "pac"
    services = ["C-STORE", "C-FETCH"]
  }
}

rule "two-actions" {
  answer {}
  reject { reason = "go-away" }
}

rule "nothing" {
  when { called_ae = ["DICOMEDGE"] }
}

rule "clinic-a" {
  colour = "blue"
  reject {
    reason    = "no-reason"
    transient = "sometimes"
  }
  audit {}
}
