// Package testpeer helps tests run real peers (DCMTK, Orthanc, Pebble,
// stunnel, HAProxy, rsyslog, openssl): finding the tools, picking loopback
// ports, running processes with their output captured, and making an
// independent PKI with openssl in a test's temporary directory.
package testpeer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI, where a missing tool is a
// failure rather than a skip.
func InCI() bool { return os.Getenv("CI") != "" && os.Getenv("CI") != "false" }

// Require fails (in CI) or skips (elsewhere) the test unless every named
// executable is on PATH.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if InCI() {
				t.Fatalf("required tool %q not found on PATH (scripts/test installs it)", tool)
			}
			t.Skipf("tool %q not found on PATH; run scripts/test to install the real peers", tool)
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago. The port
// is picked without SO_REUSEADDR, which net.Listen sets: with it the kernel
// may hand out a port that still has TIME_WAIT connections (thousands of
// them after a load test), which a peer that binds without SO_REUSEADDR,
// as storescp and Orthanc do, then cannot take.
//
// It is picked below the kernel's ephemeral range where there is one: a
// port the kernel hands out for port 0 is also one it hands to outgoing
// connections, and with thousands of them in flight (other tests' load
// loops) one took a port in the moment between this pick and storescp
// binding it, 2 runs in 30 (storescp binds the wildcard address, which
// conflicts with any socket on the port).
func FreePort(t testing.TB) int {
	t.Helper()
	if lo, hi := belowEphemeral(); lo < hi {
		for range 100 {
			p := lo + rand.IntN(hi-lo)
			if !handOut(p) {
				continue
			}
			ln, err := strictListen.Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err == nil {
				ln.Close()
				return p
			}
		}
	}
	ln, err := strictListen.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// handedOut holds the ports FreePort has returned in this process: picked
// at random, the same port could otherwise come twice for one peer's two
// addresses, or for two peers, before either binds it.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// handOut records p as handed out, false if it already was.
func handOut(p int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[p] {
		return false
	}
	handedOut.ports[p] = true
	return true
}

// strictListen binds without SO_REUSEADDR where the platform allows.
var strictListen = net.ListenConfig{Control: noReuseAddr}

// FreeAddr returns "127.0.0.1:<port>" for a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// Env is the environment for DCMTK processes: without TCP_NODELAY a DCMTK
// peer waits ~40 ms per message (Nagle against delayed ACK).
func Env(extra ...string) []string {
	return append(append(os.Environ(), "TCP_NODELAY=1"), extra...)
}

// Run runs a peer to completion and returns its combined output.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	out, _, err := RunCPU(ctx, name, args...)
	return out, err
}

// RunCPU is Run that also returns the user+system CPU time the peer used.
func RunCPU(ctx context.Context, name string, args ...string) (string, time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = Env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := startOrphanProof(cmd); err != nil {
		return "", 0, err
	}
	err := cmd.Wait()
	var cpu time.Duration
	if ps := cmd.ProcessState; ps != nil {
		cpu = ps.UserTime() + ps.SystemTime()
	}
	return out.String(), cpu, err
}

// Process is a long-running peer whose output is kept for failure messages.
type Process struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Output returns what the process has printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, valid after Done is closed.
func (p *Process) Err() error { <-p.done; return p.err }

// Start starts a long-running peer, stopped (and its output logged on
// failure) when the test ends.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p := &Process{done: make(chan struct{})}
	p.Cmd = exec.Command(name, args...)
	p.Cmd.Env = Env()
	p.Cmd.Stdout = lockedWriter{p}
	p.Cmd.Stderr = lockedWriter{p}
	if err := startOrphanProof(p.Cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// StartupTimeout bounds the wait for a peer to listen. It is generous
// because WaitListening returns as soon as the port answers (or the peer
// exits): on a loaded 2-core CI machine rsyslogd with gtls was seen taking
// 8 s to listen, and a tighter bound made the test fail, not faster.
const StartupTimeout = 60 * time.Second

// WaitListening waits until addr accepts TCP connections or the process
// exits, failing the test after timeout. With a process, on Linux, the
// port must be listened on by that process itself (see listensOn).
func WaitListening(t testing.TB, addr string, timeout time.Duration, p *Process) {
	t.Helper()
	if err := waitListening(addr, timeout, p); err != nil {
		t.Fatal(err)
	}
}

// errExited says the peer ended before it listened.
var errExited = errors.New("peer exited before listening")

func waitListening(addr string, timeout time.Duration, p *Process) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil {
			select {
			case <-p.Done():
				return fmt.Errorf("%w on %s: %v\n%s", errExited, addr, p.err, p.Output())
			default:
			}
		}
		if p != nil {
			if mine, ok := listensOn(p.Cmd.Process.Pid, port(addr)); ok {
				if mine {
					return nil
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			if p == nil {
				return nil
			}
			// Something answers; make sure it is our peer and not another
			// process that took the port while ours failed to bind it.
			select {
			case <-p.Done():
				return fmt.Errorf("%w on %s: %v\n%s", errExited, addr, p.err, p.Output())
			case <-time.After(50 * time.Millisecond):
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := ""
	if p != nil {
		out = p.Output()
	}
	return fmt.Errorf("nothing listening on %s after %v\n%s", addr, timeout, out)
}

// StartListening starts a peer that listens on the loopback addresses it is
// given, and waits for it. A port that was free a moment ago can be taken
// before the peer binds it (by another test's peer, or as the ephemeral port
// of an outgoing connection), so a peer that exits saying its address is in
// use is started again on new ports, a bounded number of times.
func StartListening(t testing.TB, ports int, name string, args func(addrs []string) []string) (*Process, []string) {
	t.Helper()
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		addrs := make([]string, ports)
		for i := range addrs {
			addrs[i] = FreeAddr(t)
		}
		p := Start(t, name, args(addrs)...)
		// Every address: a peer may bind them one after the other and exit
		// on a later one that was taken meanwhile (Orthanc: DICOM, then HTTP).
		var err error
		for _, a := range addrs {
			if err = waitListening(a, StartupTimeout, p); err != nil {
				break
			}
		}
		if err == nil {
			return p, addrs
		}
		last = err
		if !errors.Is(err, errExited) || !addressInUse(p.Output()) {
			break
		}
	}
	t.Fatal(last)
	return nil, nil
}

func addressInUse(out string) bool {
	out = strings.ToLower(out)
	return strings.Contains(out, "already in use") || strings.Contains(out, "cannot listen") ||
		strings.Contains(out, "eaddrinuse")
}

// ExitCode returns the process exit code carried by err, 0 for nil, -1 if
// err is not an exit error.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// Context returns a context bounded by d and cancelled when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Describe formats a peer invocation and its output for failure messages.
func Describe(name string, args []string, out string) string {
	return fmt.Sprintf("%s %q:\n%s", name, args, out)
}
