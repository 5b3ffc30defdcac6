# Every mistake here is deliberate: TestListenerDiagnosticsGolden checks that
# all of them are reported at once, each at its own file:line:col.
edge {
  listen = "127.0.0.1:2762"
}

listener "edge" {
  listen = "127.0.0.1:2763"
}

listener "inside" {
  listen = "10.0.0.2:11112"
  tls    = false
}

listener "inside" {
  listen = "10.0.0.3:11112"
}

listener "bad name" {
  listen = "10.0.0.4:11112"
}

listener "lab" {
  listen     = "127.0.0.1:2762"
  tls        = "no"
  allow_cidr = ["10.1.0.0/33"]
}

listener "unused" {
  tls        = false
  allow_cidr = ["10.2.0.0/24"]
}

listener "modalities" {
  listen     = "10.0.0.2:104"
  tls        = false
  allow_cidr = ["10.3.0.0/24"]
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

rule "typo" {
  when { listener = ["insde"] }
  reject {}
}

rule "modalities-by-cert" {
  when {
    listener  = ["modalities"]
    client_cn = ["*.example.org"]
  }
  answer {}
}

rule "modalities-all" {
  when { listener = ["modalities"] }
  relay {
    backend           = "pacs"
    services          = ["C-FIND", "C-MOVE"]
    move_destinations = ["CLINB_WS2"]
  }
}

rule "modalities-again" {
  when {
    listener   = ["modalities"]
    calling_ae = ["CT1"]
  }
  reject {}
}
