package policy

import (
	"slices"
	"testing"
	"time"
)

func TestStoreAndForwardPolicy(t *testing.T) {
	cfg, diags := Load("/etc/dicomedge/policy.hcl", []byte(minimalTLS+`
spool {
  dir      = "q"
  max_size = "2GiB"
  max_age  = "24h"
}
backend "pacs" {
  address  = "pacs:104"
  ae_title = "PACS"
}
backend "cloud" {
  dicomweb {
    url        = "https://dicom.example.org/v1/dicomweb/"
    ca         = ["cloud-ca.pem"]
    token_file = "/run/cloud.token"
  }
}
rule "sf" {
  when { called_ae = ["PACS"] }
  relay {
    backend           = "pacs"
    store_and_forward = true
  }
}
rule "web" {
  when { called_ae = ["CLOUD"] }
  relay { backend = "cloud" }
}
rule "plain" {
  when { called_ae = ["LIVE"] }
  relay { backend = "pacs" }
}
`))
	if diags.HasErrors() {
		t.Fatalf("diagnostics = %q", diagKeys(diags))
	}
	if sp := cfg.Spool; sp.Dir != "/etc/dicomedge/q" || sp.MaxSize != 2<<30 || sp.MaxAge != 24*time.Hour {
		t.Errorf("spool: %+v", sp)
	}
	web := cfg.Backends["cloud"].DICOMweb
	if web == nil || web.URL != "https://dicom.example.org/v1/dicomweb" || web.CA[0] != "/etc/dicomedge/cloud-ca.pem" || web.TokenFile != "/run/cloud.token" {
		t.Errorf("dicomweb: %+v", web)
	}
	for _, tc := range []struct {
		called string
		sf     bool
	}{{"PACS", true}, {"CLOUD", true}, {"LIVE", false}} {
		d := cfg.Policy.Evaluate(&Input{Listener: "edge", CalledAE: tc.called, CallingAE: "X"})
		if d.StoreAndForward != tc.sf {
			t.Errorf("%s: store_and_forward %v, want %v", tc.called, d.StoreAndForward, tc.sf)
		}
		if tc.sf && !slices.Equal(d.Services, []string{"C-ECHO", "C-STORE"}) {
			t.Errorf("%s: services %v, want C-ECHO and C-STORE only", tc.called, d.Services)
		}
		if tc.sf && (!d.AllowsService("C-STORE") || d.AllowsService("C-FIND")) {
			t.Errorf("%s: a store-and-forward rule must allow C-STORE and nothing but C-ECHO besides", tc.called)
		}
	}

	defaults, diags := Load("/etc/dicomedge/policy.hcl", []byte(minimalTLS))
	if diags.HasErrors() {
		t.Fatal(diagKeys(diags))
	}
	if sp := defaults.Spool; sp.Dir != "/etc/dicomedge/var/spool" || sp.MaxSize != DefaultSpoolMaxSize || sp.MaxAge != DefaultSpoolMaxAge {
		t.Errorf("spool defaults: %+v", sp)
	}
}

func TestStoreAndForwardMistakes(t *testing.T) {
	_, diags := Load("p.hcl", []byte(minimalTLS+`
spool {
  max_size = "lots"
  max_age  = "0s"
}
backend "pacs" {
  address  = "pacs:104"
  ae_title = "PACS"
}
backend "cloud" {
  address = "x:1"
  dicomweb {
    url        = "http://dicom.example.org"
    token_file = "t"
    oauth2 {
      token_url = "https://auth.example.org/token"
    }
  }
}
rule "sf" {
  when { called_ae = ["PACS"] }
  relay {
    backend           = "pacs"
    store_and_forward = true
    services          = ["C-STORE", "C-FIND"]
    move_destinations = ["X"]
  }
}
rule "web" {
  when { called_ae = ["CLOUD"] }
  relay {
    backend           = "cloud"
    store_and_forward = false
  }
}
`))
	want := []string{
		"9:14 error: Invalid size",
		"10:14 error: Invalid duration",
		"17:3 error: Address with dicomweb",
		"19:18 error: Invalid URL",
		"21:5 error: Two credentials",
		"21:5 error: Missing client_id",
		"21:5 error: Missing client_secret_file",
		"31:37 error: Service not allowed with store-and-forward",
		"32:25 error: Move destinations with store-and-forward",
		"39:25 error: DICOMweb backend needs store-and-forward",
	}
	got := diagKeys(diags)
	if !slices.Equal(got, want) {
		t.Errorf("diagnostics:\n got %q\nwant %q", got, want)
	}
}
