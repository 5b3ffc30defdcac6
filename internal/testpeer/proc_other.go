//go:build !linux

package testpeer

import "os/exec"

func startOrphanProof(cmd *exec.Cmd) error { return cmd.Start() }
