// Package pgtest runs a real PostgreSQL server for tests: initdb into a
// temporary folder, the server on a free loopback port, torn down with an
// immediate shutdown when the tests end.
//
// A package shares one server:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		dsn := pgtest.NewDatabase(t) // a fresh database, dropped at cleanup
//		...
//	}
//
// The server starts on the first Shared or NewDatabase call, so a package
// whose PostgreSQL tests do not run pays nothing. PostgreSQL refuses to run
// as root; as root, pgtest runs initdb and the server as the "postgres" OS
// user (setuid in the child, no runuser needed) with the folder chowned to it.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// InstallHint is what to run when the server binaries are missing.
const InstallHint = "apt-get install -y postgresql"

// Server is a running PostgreSQL server owned by the test process.
type Server struct {
	bin     string // folder with initdb, postgres, pg_ctl
	base    string // temporary folder: data/, postgres.log
	data    string
	logPath string
	port    int
	cred    *syscall.Credential // nil unless running as root

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited <-chan error // receives once the server process has exited
	// dbs numbers the databases NewDatabase creates.
	dbs atomic.Int64
}

// findBin locates the PostgreSQL server binaries: on PATH (following
// symlinks, since Debian links only some of them into /usr/local/bin), or in
// /usr/lib/postgresql/*/bin, newest version first.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	for _, name := range []string{"postgres", "initdb", "pg_ctl"} {
		if p, err := exec.LookPath(name); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
				return filepath.Dir(real), nil
			}
			if has(filepath.Dir(p)) {
				return filepath.Dir(p), nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: install them with `%s`", InstallHint)
}

// Start initializes a data folder and starts a server on a free loopback port.
func Start(ctx context.Context) (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: making a temporary folder: %w", err)
	}
	s := &Server{bin: bin, base: base, data: filepath.Join(base, "data"), logPath: filepath.Join(base, "postgres.log")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(base)
			return nil, fmt.Errorf("pgtest: running as root needs the \"postgres\" OS user (PostgreSQL refuses root; `%s` creates it): %w", InstallHint, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(base, uid, gid); err != nil {
			os.RemoveAll(base)
			return nil, fmt.Errorf("pgtest: handing %s to the postgres user: %w", base, err)
		}
	}
	out, err := s.run(ctx, filepath.Join(bin, "initdb"), "-D", s.data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
	if err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	// Test settings: loopback only, no unix socket, no fsync (only an OS
	// crash would lose data). synchronous_commit stays on: Restart is an
	// immediate shutdown, and committed data must survive it.
	conf := "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\nfull_page_writes = off\nmax_connections = 300\nshared_buffers = 32MB\n"
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("pgtest: configuring the server: %w", err)
	}
	// A port can be taken between picking and binding it: try a few.
	for attempt := 0; ; attempt++ {
		s.port, err = freePort()
		if err == nil {
			err = s.start(ctx)
		}
		if err == nil {
			return s, nil
		}
		if attempt == 4 || ctx.Err() != nil {
			s.Stop()
			return nil, err
		}
	}
}

// run runs a PostgreSQL tool as the server's user.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: picking a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the server in the foreground of a child process (not through
// pg_ctl's daemonizing), so that it gets SIGKILL if the test process dies
// (Pdeathsig) and never outlives it; then waits until it accepts connections.
func (s *Server) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: opening the server log: %w", err)
	}
	if s.cred != nil {
		_ = logf.Chown(int(s.cred.Uid), int(s.cred.Gid))
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.data, "-p", strconv.Itoa(s.port))
	cmd.Dir = s.base
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	logf.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		c, err := pgx.Connect(ctx, s.dsn("postgres"))
		if err == nil {
			c.Close(ctx)
			// Keep the exit channel for stop.
			s.mu.Lock()
			s.exited = exited
			s.mu.Unlock()
			return nil
		}
		select {
		case werr := <-exited:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("pgtest: postgres exited while starting (%v); log:\n%s", werr, s.logTail())
		case <-ctx.Done():
			s.kill(exited)
			return fmt.Errorf("pgtest: postgres did not accept connections on port %d: %w; log:\n%s", s.port, err, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// dsn is the URL of a database on the server.
func (s *Server) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// DSN is the URL of the server's "postgres" database.
func (s *Server) DSN() string { return s.dsn("postgres") }

// Port is the server's loopback port.
func (s *Server) Port() int { return s.port }

// CreateDatabase creates a new empty database and returns its URL.
func (s *Server) CreateDatabase(ctx context.Context) (name, dsn string, err error) {
	name = fmt.Sprintf("t%d_%d", os.Getpid(), s.dbs.Add(1))
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return "", "", fmt.Errorf("pgtest: connecting to create a database: %w", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		return "", "", fmt.Errorf("pgtest: creating database %s: %w", name, err)
	}
	return name, s.dsn(name), nil
}

// DropDatabase drops a database, disconnecting its clients.
func (s *Server) DropDatabase(ctx context.Context, name string) error {
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return fmt.Errorf("pgtest: connecting to drop a database: %w", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("pgtest: dropping database %s: %w", name, err)
	}
	return nil
}

// Restart stops the server at once (as a crash would) and starts it again
// on the same port and data; clients see their connections break.
func (s *Server) Restart(ctx context.Context) error {
	s.stopServer()
	return s.start(ctx)
}

// stopServer shuts the server down with pg_ctl stop -m immediate and waits
// for the process; if that fails it kills the process group.
func (s *Server) stopServer() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd, s.exited = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = s.run(ctx, filepath.Join(s.bin, "pg_ctl"), "stop", "-D", s.data, "-m", "immediate", "-w", "-t", "20")
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		s.kill(exited)
	}
}

func (s *Server) kill(exited <-chan error) {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	// The server and its backends are one process group (Setpgid).
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

// Stop shuts the server down and removes its folder.
func (s *Server) Stop() {
	s.stopServer()
	_ = os.RemoveAll(s.base)
}

// shared is the package's one server (started lazily, stopped by Main).
// A package-level variable is the only way a TestMain and the tests it
// runs can share it.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
	main atomic.Bool
}

// Main runs the package's tests and stops the shared server (if one was
// started) afterwards, whatever the tests did.
func Main(m *testing.M) int {
	shared.main.Store(true)
	defer func() {
		if shared.srv != nil {
			shared.srv.Stop()
		}
	}()
	return m.Run()
}

// SharedServer returns the package's shared server, starting it on first use.
// It fails the test when PostgreSQL cannot start (with the apt command to
// install it when its binaries are missing).
func SharedServer(t testing.TB) *Server {
	t.Helper()
	if !shared.main.Load() {
		t.Fatal("pgtest: the package needs func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }")
	}
	shared.once.Do(func() {
		shared.srv, shared.err = Start(context.Background())
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

// Shared returns the URL of the shared server's "postgres" database.
func Shared(t testing.TB) string {
	t.Helper()
	return SharedServer(t).DSN()
}

// NewDatabase creates a fresh database on the shared server and returns its
// URL; the database is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	s := SharedServer(t)
	ctx := context.Background()
	name, dsn, err := s.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.DropDatabase(context.Background(), name); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%v", err)
		}
	})
	return dsn
}

// Restart restarts the shared server (an immediate shutdown, then a start
// on the same port): for tests of what clients do when the database goes away.
func Restart(t testing.TB) {
	t.Helper()
	if err := SharedServer(t).Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
}
