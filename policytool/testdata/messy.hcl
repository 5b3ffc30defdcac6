# A policy written by hand, in a hurry.
tls {
client_ca = ["ca.pem"]   # the clinics' CA
    cert_file="edge.pem"
  key_file    =    "edge-key.pem"
}
backend "pacs" {
  address = "127.0.0.1:11112"
    ae_title      = "MAINPACS" # the PACS inside
}
rule "clinic-a" {
    when {
  client_cn = [ "*.clinic-a.example.org" ]
      calling_ae=["CLINA_*"]
    }
  relay {
    backend = "pacs"
    services = ["C-ECHO","C-STORE",
    "C-FIND"]
  }
}
rule "deny" {
  reject { reason = "calling-ae-not-recognized" }
    }
