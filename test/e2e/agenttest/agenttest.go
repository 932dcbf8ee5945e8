// Package agenttest is the plumbing the end-to-end test packages share to run
// this tree's own programs: kubectl-agent and agent-broker built once per
// test process, one run of a built binary (output and exit code), a free
// loopback address, agent-broker serve as a real process (waited until
// ready, its log kept, stopped, killed and restarted on the same config and
// store), a PostgreSQL database on a server shared by the process, and a
// buffer goroutines share. Each package keeps its own broker config and its
// own assertions; only the mechanics live here.
//
// A package that uses Binaries or PostgresURL runs its tests through Main, so
// that what they leave (the binaries' folder, the PostgreSQL server) goes
// when the process ends:
//
//	func TestMain(m *testing.M) { os.Exit(agenttest.Main(m, cluster.Main)) }
package agenttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/pgtest"
)

// A test binary is one process, so the once-per-process state lives in
// package variables (as in package cluster).
var (
	build struct {
		once sync.Once
		dir  string
		err  error
	}
	pg struct {
		once sync.Once
		srv  *pgtest.Server
		err  error
	}
)

// Main runs the package's tests with run (cluster.Main, say, or the
// package's own function that calls it) and then removes the binaries
// Binaries built and stops the server PostgresURL started, whatever the
// tests did.
func Main(m *testing.M, run func(*testing.M) int) int {
	defer func() {
		if build.dir != "" {
			_ = os.RemoveAll(build.dir)
		}
		if pg.srv != nil {
			pg.srv.Stop()
		}
	}()
	return run(m)
}

// Binaries builds kubectl-agent and agent-broker from this module once per
// test process (by import path, so it works from any package folder) and
// returns their paths. The tests run the code under test, not a stale ./bin.
func Binaries(t testing.TB) (agent, broker string) {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "kubectl-agent-e2e-bin-")
		if build.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", build.dir+string(os.PathSeparator),
			"github.com/kubectl-agent/kubectl-agent/cmd/kubectl-agent",
			"github.com/kubectl-agent/kubectl-agent/cmd/agent-broker").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("building kubectl-agent and agent-broker: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return filepath.Join(build.dir, "kubectl-agent"), filepath.Join(build.dir, "agent-broker")
}

// FreeAddr is a loopback address ("127.0.0.1:PORT") nothing listens on now,
// for a process that must be told its address before it starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// PostgresURL is a fresh database on a PostgreSQL server started once per
// test process; the database is dropped when the test ends, the server when
// Main returns. (pgtest.Main cannot be combined with cluster.Main: each runs
// the tests itself.)
func PostgresURL(t testing.TB) string {
	t.Helper()
	pg.once.Do(func() { pg.srv, pg.err = pgtest.Start(context.Background()) })
	if pg.err != nil {
		t.Fatalf("starting PostgreSQL: %v", pg.err)
	}
	name, dsn, err := pg.srv.CreateDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.srv.DropDatabase(context.Background(), name) })
	return dsn
}

// How long a broker has to become ready, and to stop after SIGTERM (its
// graceful shutdown gives requests in flight 10s) before it is killed.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// Broker is an agent-broker serve process on a loopback address.
type Broker struct {
	// URL is http://Addr.
	URL string
	// Addr is the address it listens on (--listen).
	Addr string
	// ConfigFile is the config it runs with.
	ConfigFile string

	bin  string
	env  []string
	logs SyncBuffer

	// The current process; done closes when it has exited and waitErr
	// (how it exited) is set.
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartBroker writes configYAML to a file and runs `bin serve --config FILE
// --listen addr --log-level debug` with env added to this process's
// environment, and waits until GET /readyz answers 200 (so a backend that
// checks its readiness, as eks does, has answered). The process is stopped,
// and its log shown when the test failed, at the test's cleanup.
func StartBroker(t testing.TB, bin, addr, configYAML string, env ...string) *Broker {
	t.Helper()
	b := &Broker{URL: "http://" + addr, Addr: addr, ConfigFile: filepath.Join(t.TempDir(), "broker.yaml"), bin: bin, env: env}
	if err := os.WriteFile(b.ConfigFile, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Stop()
		if t.Failed() {
			t.Logf("agent-broker logs:\n%s", b.Logs())
		}
	})
	b.start(t)
	return b
}

func (b *Broker) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(b.bin, "serve", "--config", b.ConfigFile, "--listen", b.Addr, "--log-level", "debug")
	if len(b.env) > 0 {
		cmd.Env = append(os.Environ(), b.env...)
	}
	// One writer for both: exec copies through one pipe, and Wait returns
	// once the copy is done, so Logs holds all of it after Stop.
	cmd.Stdout, cmd.Stderr = &b.logs, &b.logs
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting agent-broker: %v", err)
	}
	done := make(chan struct{})
	b.cmd, b.done = cmd, done
	go func() { b.waitErr = cmd.Wait(); close(done) }()

	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := hc.Get(b.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("agent-broker exited (%v):\n%s", b.waitErr, b.Logs())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent-broker not ready after %s:\n%s", readyTimeout, b.Logs())
		}
	}
}

// running reports whether the current process has not exited yet.
func (b *Broker) running() bool {
	if b.done == nil {
		return false
	}
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the process to exit (killing it when it
// takes longer than its graceful shutdown allows); it returns how the
// process exited, nil for a clean exit. Stopping a stopped broker returns
// how it exited.
func (b *Broker) Stop() error {
	if b.done == nil {
		return nil
	}
	if b.running() {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(stopTimeout):
			_ = b.cmd.Process.Kill()
			<-b.done
			return fmt.Errorf("agent-broker did not stop within %s of SIGTERM", stopTimeout)
		}
	}
	return b.waitErr
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (b *Broker) Kill() {
	if b.running() {
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// Restart stops the broker if it runs and starts it again with the same
// config, address, environment and so store, waiting until it is ready.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	_ = b.Stop() // how the last one ended is the test's business (Stop's result)
	b.start(t)
}

// Logs is everything the broker wrote to stdout and stderr so far, across
// restarts.
func (b *Broker) Logs() string { return b.logs.String() }

// SyncBuffer is a bytes.Buffer that goroutines may write and read at once:
// a process's output being copied while the test reads it, say.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *SyncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *SyncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Run runs bin with args and env added to this process's environment, and
// returns what it wrote and its exit code; it fails the test only when bin
// cannot run at all.
func Run(t testing.TB, bin string, env []string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		exitCode = ee.ExitCode()
	case err != nil:
		t.Fatalf("running %s: %v", bin, err)
	}
	return out.String(), errOut.String(), exitCode
}
