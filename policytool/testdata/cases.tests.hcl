# Cases that hold for v1.hcl; v2.hcl breaks some of them (see the golden files of the CLI tests).

test "anyone may echo the edge" {
  client { cn = "modality.elsewhere.net" }
  calling_ae = "ANY"
  called_ae  = "DICOMEDGE"
  expect {
    decision = "answer"
    rule     = "echo"
    allows   = ["C-ECHO"]
  }
}

test "clinic A moves to its workstation only" {
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
    denies                    = ["C-GET"]
    move_destinations_allowed = ["CLINA_WS1"]
    move_destinations_denied  = ["EVIL"]
  }
}

test "research queries the archive" {
  client { cn = "stats.research.example.org" }
  calling_ae = "RESEARCH"
  called_ae  = "ARCHIVE"
  expect {
    decision = "relay"
    backend  = "archive"
    allows   = ["C-FIND"]
    denies   = ["C-STORE", "C-MOVE"]
  }
}

test "LATER is busy" {
  client { cn = "ws1.other.example.org" }
  source_ip  = "198.51.100.1"
  calling_ae = "OTHER_WS1"
  called_ae  = "LATER"
  expect {
    decision = "reject"
    rule     = "busy"
    reason   = "called-ae-not-recognized"
  }
}

test "clinic A outside its network" {
  client { cn = "ct1.clinic-a.example.org" }
  source_ip  = "198.51.100.7"
  calling_ae = "CLINA_CT1"
  called_ae  = "MAINPACS"
  expect {
    decision = "reject"
    rule     = "deny"
    reason   = "calling-ae-not-recognized"
  }
}

test "the PACS sends out to clinic A through the inside listener" {
  listener   = "inside"
  source_ip  = "10.0.0.5"
  calling_ae = "MAINPACS"
  called_ae  = "CLINA_WS1"
  expect {
    decision = "relay"
    rule     = "pacs-out"
    backend  = "clinic-a-ws1"
    allows   = ["C-STORE"]
    denies   = ["C-MOVE"]
  }
}

test "the way out is not open from the TLS listener" {
  client { cn = "pacs.example.org" }
  source_ip  = "10.0.0.5"
  calling_ae = "MAINPACS"
  called_ae  = "CLINA_WS1"
  expect {
    decision = "reject"
    rule     = "deny"
  }
}
