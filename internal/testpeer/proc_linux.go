//go:build linux

package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// CPU is the user+system CPU time the running process has used so far
// (its threads included), from /proc/PID/stat; 0 when it cannot be read.
func (p *Process) CPU() time.Duration {
	if p == nil || p.Cmd == nil || p.Cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start at field 3, so utime and stime (fields 14
	// and 15) are the 12th and 13th of them, in clock ticks (USER_HZ, 100
	// on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// noReuseAddr clears SO_REUSEADDR, which Go sets on listeners before
// Control runs and binds after.
func noReuseAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0)
	})
	if err != nil {
		return err
	}
	return serr
}

// listensOn reports whether the process pid (or one of its descendants)
// holds a TCP socket listening on port: a LISTEN entry of /proc/PID/net/tcp
// or tcp6 whose inode is one of the process's descriptors. ok is false when
// /proc cannot say, and the caller falls back to connecting. Connecting is
// not proof: a port picked as free a moment ago may be another process's
// listener by now, while our peer has yet to fail binding it.
func listensOn(pid, port int) (listening, ok bool) {
	inodes := map[string]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			if table == "tcp" {
				return false, false
			}
			continue
		}
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			i := strings.LastIndexByte(f[1], ':')
			if p, err := strconv.ParseUint(f[1][i+1:], 16, 16); err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return false, true
	}
	seen := map[int]bool{}
	var walk func(pid int) bool
	walk = func(pid int) bool {
		if seen[pid] {
			return false
		}
		seen[pid] = true
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			if l, err := os.Readlink(dir + "/" + fd.Name()); err == nil && inodes[l] {
				return true
			}
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
			for _, c := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(c); err == nil && walk(n) {
					return true
				}
			}
		}
		return false
	}
	return walk(pid), true
}

// belowEphemeral is the range of ports FreePort picks from: from 20000 up
// to the start of the kernel's ephemeral range (net.ipv4.ip_local_port_range,
// 32768 by default), which outgoing connections never take. Empty when that
// range starts too low to leave room.
func belowEphemeral() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	start, err := strconv.Atoi(f[0])
	if err != nil || start < 21000 {
		return 0, 0
	}
	return 20000, start
}
