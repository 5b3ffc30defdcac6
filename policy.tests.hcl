# Test cases for policy.hcl: `dicomedge policy test --config policy.hcl policy.tests.hcl`.
# Each test describes one association request and what the policy must decide for it; run them
# before every change to policy.hcl (README.md, "Changing the policy safely").

test "development client echoes the edge" {
  client { cn = "client" }
  source_ip  = "127.0.0.1"
  calling_ae = "MODALITY1"
  called_ae  = "DICOMEDGE"
  expect {
    decision = "answer"
    rule     = "echo"
    allows   = ["C-ECHO"]
    denies   = ["C-STORE", "C-FIND"]
  }
}

test "development modality stores and queries, nothing more" {
  client { cn = "client" }
  source_ip  = "127.0.0.1"
  calling_ae = "CT1"
  called_ae  = "MAINPACS"
  expect {
    decision                 = "relay"
    rule                     = "modalities-to-pacs"
    backend                  = "pacs"
    allows                   = ["C-ECHO", "C-STORE", "C-FIND"]
    denies                   = ["C-MOVE", "C-GET", "N-ACTION"]
    move_destinations_denied = ["MODALITY1"]
  }
}

test "development client under another AE title is refused" {
  client { cn = "client" }
  calling_ae = "WS1"
  called_ae  = "MAINPACS"
  expect {
    decision = "reject"
    rule     = "deny"
    reason   = "calling-ae-not-recognized"
  }
}

test "clinic A's CT may store, query and move to its own workstation" {
  client {
    cn  = "ct1.clinic-a.example.org"
    dns = ["ct1.clinic-a.example.org"]
  }
  source_ip  = "203.0.113.7"
  calling_ae = "CLINA_CT1"
  called_ae  = "MAINPACS"
  expect {
    decision                  = "relay"
    rule                      = "clinic-a"
    backend                   = "pacs"
    allows                    = ["C-STORE", "C-FIND", "C-MOVE"]
    denies                    = ["C-GET", "N-SET"]
    move_destinations_allowed = ["CLINA_WS1"]
    move_destinations_denied  = ["CLINA_WS2", "EVIL"]
  }
}

test "clinic A's certificate from outside its network is refused" {
  client { cn = "ct1.clinic-a.example.org" }
  source_ip  = "198.51.100.7"
  calling_ae = "CLINA_CT1"
  called_ae  = "MAINPACS"
  expect {
    decision = "reject"
    rule     = "deny"
  }
}

test "an unknown client is refused" {
  client { cn = "intruder.example.net" }
  source_ip  = "192.0.2.66"
  calling_ae = "MODALITY1"
  called_ae  = "DICOMEDGE"
  expect {
    decision = "reject"
    reason   = "calling-ae-not-recognized"
    denies   = ["C-ECHO"]
  }
}
