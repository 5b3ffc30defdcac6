//go:build linux

package testpeer

import (
	"os/exec"
	"runtime"
	"syscall"
)

// startOrphanProof starts cmd so that the kernel kills it when the test
// binary dies without running its cleanups (go test -timeout panics,
// os.Exit, SIGKILL): otherwise storescp, Orthanc and friends outlive the run
// and hold their ports. Pdeathsig follows the OS thread that forked, so the
// fork happens on a locked thread; Go does not end idle threads, only locked
// ones whose goroutine exits, and this one is unlocked again.
func startOrphanProof(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}
