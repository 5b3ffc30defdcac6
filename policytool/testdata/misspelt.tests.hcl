test "misspelt attribute" {
  client { cn = "ct1.clinic-a.example.org" }
  calling_aet = "CLINA_CT1"
  called_ae   = "MAINPACS"
  expect { decision = "relay" }
}

test "misspelt expectation" {
  client { common_name = "ct1.clinic-a.example.org" }
  calling_ae = "CLINA_CT1"
  called_ae  = "MAINPACS"
  expect {
    decison = "relay"
    allows  = ["C-STOR"]
  }
}

test "bad values" {
  cert       = "no-such-cert.pem"
  source_ip  = "203.0.113.999"
  calling_ae = "CLINA_CT1"
  called_ae  = "MAINPACS"
  expect {
    decision = "accept"
    reason   = "go-away"
  }
}

test "bad values" {
  calling_ae = "X"
  called_ae  = "Y"
  expect { decision = "reject" }
}
