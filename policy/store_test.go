package policy

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestStoreReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.hcl")
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v1 := minimalTLS + `rule "v1" {
  when { called_ae = ["DICOMEDGE"] }
  answer {}
}`
	write(v1)
	cfg, diags := LoadFile(path)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	s := NewStore(cfg)
	in := &Input{CalledAE: "DICOMEDGE"}
	held := s.Config().Policy.Evaluate(in) // an association established under v1

	// An invalid file is refused whole; v1 stays in force.
	write(strings.Replace(v1, `answer {}`, `answer {}
  reject {}`, 1))
	inForce, attempted, diags := s.Reload(path)
	if !diags.HasErrors() || inForce != cfg || s.Config() != cfg || attempted.Files[path] == nil {
		t.Fatalf("invalid reload: diags %v, in force changed %v", diags, s.Config() != cfg)
	}
	if !strings.Contains(diags.Error(), "more than one action") {
		t.Errorf("reload failure does not say why: %v", diags)
	}

	// A valid file replaces it.
	write(strings.Replace(v1, `answer {}`, `reject { reason = "called-ae-not-recognized" }`, 1))
	inForce, _, diags = s.Reload(path)
	if diags.HasErrors() || inForce == cfg || s.Config() != inForce {
		t.Fatalf("valid reload: %v", diags)
	}
	if d := s.Config().Policy.Evaluate(in); d.Action != ActionReject || d.Reject.Reason != 7 {
		t.Errorf("new policy decided %v", d)
	}
	// The association established before keeps its decision and permissions.
	if held.Action != ActionAnswer || held.Rule != "v1" || !held.AllowsService("C-ECHO") {
		t.Errorf("held decision changed: %+v", held)
	}
}

// Readers never see a partly built configuration while reloads run.
func TestStoreConcurrentReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.hcl")
	if err := os.WriteFile(path, []byte(minimalTLS+`rule "r" {
  answer {}
}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := LoadFile(path)
	s := NewStore(cfg)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d := s.Config().Policy.Evaluate(&Input{}); d.Rule != "r" {
					t.Errorf("decision %v", d)
					return
				}
			}
		}()
	}
	for range 20 {
		if _, _, diags := s.Reload(path); diags.HasErrors() {
			t.Error(diags)
		}
	}
	close(stop)
	wg.Wait()
}
