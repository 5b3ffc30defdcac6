package console

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/dicomedge/dicomedge/audit"
	"github.com/dicomedge/dicomedge/spool"
)

// SpoolActions are the operator's store-and-forward actions, as the CLI's
// `dicomedge spool retry` and `spool purge` (docs/spool.md): retry moves a
// backend's failed/ instances back to its queue; purge removes a
// backend's instances received longer ago than a given age, each audited
// spool.purged by the spool. The backend is one the spool holds, or empty
// for every backend; purge wants its age written out ("0" for all), so a
// stray click cannot empty the spool.
func SpoolActions(sp *spool.Spool) []Action {
	backendInput := Input{Name: "backend", Label: "backend", Placeholder: "every backend"}
	backend := func(form url.Values) (string, error) {
		b := strings.TrimSpace(form.Get("backend"))
		if b == "" {
			return "", nil
		}
		names, err := sp.Backends()
		if err != nil {
			return "", err
		}
		if !slices.Contains(names, b) {
			return "", fmt.Errorf("the spool holds no backend %q", audit.Escape(b))
		}
		return b, nil
	}
	return []Action{{
		Name: "spool-retry", Label: "Retry failed instances",
		Description: "failed/ back into the queue, as dicomedge spool retry",
		Inputs:      []Input{backendInput},
		Run: func(_ context.Context, form url.Values) (string, error) {
			b, err := backend(form)
			if err != nil {
				return "", err
			}
			n, err := sp.Retry(b, false)
			return fmt.Sprintf("%d instances moved back to the queue", n), err
		},
	}, {
		Name: "spool-purge", Label: "Purge instances",
		Description: "queued, failed and expired instances received longer ago than the age given (0: all), each audited, as dicomedge spool purge",
		Inputs:      []Input{backendInput, {Name: "older_than", Label: "older than", Placeholder: "e.g. 72h or 7d; 0 for all"}},
		Run: func(_ context.Context, form url.Values) (string, error) {
			b, err := backend(form)
			if err != nil {
				return "", err
			}
			age := strings.TrimSpace(form.Get("older_than"))
			if age == "" {
				return "", fmt.Errorf("say how old the instances to purge must be (0 for all)")
			}
			d, err := audit.ParseDuration(age)
			if err != nil || d < 0 {
				return "", fmt.Errorf("older than %q is not a duration like 72h or 7d", audit.Escape(age))
			}
			n, err := sp.Purge(b, d)
			return fmt.Sprintf("%d instances purged", n), err
		},
	}}
}
