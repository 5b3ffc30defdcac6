//go:build !linux

package testpeer

import (
	"os/exec"
	"syscall"
	"time"
)

func startOrphanProof(cmd *exec.Cmd) error { return cmd.Start() }

// CPU is not measured on this platform.
func (p *Process) CPU() time.Duration { return 0 }

func noReuseAddr(_, _ string, _ syscall.RawConn) error { return nil }

// listensOn cannot tell here; waitListening connects instead.
func listensOn(pid, port int) (listening, ok bool) { return false, false }

// belowEphemeral: the ephemeral range is not known here; FreePort asks for
// port 0.
func belowEphemeral() (lo, hi int) { return 0, 0 }
