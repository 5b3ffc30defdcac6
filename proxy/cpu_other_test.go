//go:build !unix

package proxy

import "time"

// processCPU is not measured here; the report shows 0.
func processCPU() time.Duration { return 0 }
