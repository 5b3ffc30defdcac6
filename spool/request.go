package spool

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
)

// PurgeRequest asks the edge that holds the audit log (and the queues) to
// purge on behalf of `dicomedge spool purge`, so that the purge is audited
// in the one hash chain.
type PurgeRequest struct {
	ID        string        `json:"id"`
	Backend   string        `json:"backend,omitempty"` // "" = every backend
	OlderThan time.Duration `json:"older_than,omitempty"`
}

// PurgeResult answers a PurgeRequest.
type PurgeResult struct {
	ID     string `json:"id"`
	Purged int    `json:"purged"`
	Error  string `json:"error,omitempty"`
}

// errNoEdge: no running edge served a purge request in time.
var errNoEdge = errors.New("spool: no running edge answered the purge request (is serve running with this spool?)")

// RequestPurge writes a purge request for the running edge and waits up to
// timeout for its answer.
func RequestPurge(dir, backend string, olderThan, timeout time.Duration) (int, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	req := PurgeRequest{ID: hex.EncodeToString(id[:]), Backend: backend, OlderThan: olderThan}
	b, _ := json.Marshal(req)
	tmp := filepath.Join(dir, purgeRequest+".tmp")
	if err := os.WriteFile(tmp, b, fileMode); err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, purgeRequest)); err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		b, err := os.ReadFile(filepath.Join(dir, purgeResult))
		if err != nil {
			continue
		}
		var res PurgeResult
		if json.Unmarshal(b, &res) != nil || res.ID != req.ID {
			continue
		}
		_ = os.Remove(filepath.Join(dir, purgeResult))
		if res.Error != "" {
			return res.Purged, errors.New(res.Error)
		}
		return res.Purged, nil
	}
	_ = os.Remove(filepath.Join(dir, purgeRequest))
	return 0, errNoEdge
}

// servePurgeRequests runs a pending purge request and writes its result.
func (s *Spool) servePurgeRequests(log hclog.Logger) {
	path := filepath.Join(s.cfg.Dir, purgeRequest)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	_ = os.Remove(path)
	var req PurgeRequest
	if err := json.Unmarshal(b, &req); err != nil || req.ID == "" {
		log.Warn("ignored an unreadable spool purge request", "error", err)
		return
	}
	n, err := s.Purge(req.Backend, req.OlderThan)
	res := PurgeResult{ID: req.ID, Purged: n}
	if err != nil {
		res.Error = err.Error()
	}
	log.Info("spool purged on request", "backend", req.Backend, "older_than", req.OlderThan, "purged", n)
	out, _ := json.Marshal(res)
	tmp := filepath.Join(s.cfg.Dir, purgeResult+".tmp")
	if os.WriteFile(tmp, out, fileMode) == nil {
		_ = os.Rename(tmp, filepath.Join(s.cfg.Dir, purgeResult))
	}
}
