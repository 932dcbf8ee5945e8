package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
	"github.com/kubectl-agent/kubectl-agent/test/pgtest"
)

// Names the soak gives the broker's cluster, its namespaces and the runs'
// repository.
const (
	clusterName = "soak"
	brokerNS    = "soak-brokers"
	workNS      = "soak-work"
	repository  = "acme/soak"
)

// world is everything a soak runs against: the control plane, PostgreSQL,
// the OIDC issuer stand-in, two agent-broker processes and the loopback
// load balancer in front of them.
type world struct {
	cfg      Config
	dir      string
	c        *cluster.Cluster
	pg       *pgtest.Server
	dsn      string
	iss      *oidcissuer.Issuer
	lb       *balancer
	brokers  []*brokerProc
	agentBin string // kubectl-agent
	audience string
}

func (w *world) brokerURL() string { return "http://" + w.lb.Addr() }

// setup starts the world; the caller stops it with close even on error.
func setup(ctx context.Context, cfg Config, logf func(string, ...any)) (*world, error) {
	dir, err := os.MkdirTemp("", "ka-soak-")
	if err != nil {
		return nil, err
	}
	w := &world{cfg: cfg, dir: dir}
	agent, broker, err := binaries(ctx, cfg.BinDir, dir)
	if err != nil {
		return w, err
	}
	w.agentBin = agent

	start := time.Now()
	if w.c, err = cluster.Start(ctx, cluster.Options{}); err != nil {
		return w, fmt.Errorf("starting the control plane: %w", err)
	}
	logf("control plane %s ready at %s (%s)", w.c.Version, w.c.Server, time.Since(start).Round(time.Millisecond))
	cs := w.c.Clientset()
	for _, ns := range []string{brokerNS, workNS} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return w, fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}

	if w.pg, err = pgtest.Start(ctx); err != nil {
		return w, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	if _, w.dsn, err = w.pg.CreateDatabase(ctx); err != nil {
		return w, err
	}
	logf("PostgreSQL on 127.0.0.1:%d", w.pg.Port())

	if w.iss, err = oidcissuer.New(); err != nil {
		return w, fmt.Errorf("starting the OIDC issuer stand-in: %w", err)
	}
	if w.lb, err = newBalancer(); err != nil {
		return w, err
	}
	w.audience = w.brokerURL()

	cfgFile := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(cfgFile, []byte(w.brokerConfig()), 0o600); err != nil {
		return w, err
	}
	for i := range 2 {
		addr, err := freeAddr()
		if err != nil {
			return w, err
		}
		b := &brokerProc{name: fmt.Sprintf("broker-%c", 'a'+i), bin: broker, config: cfgFile, addr: addr,
			logPath: filepath.Join(dir, fmt.Sprintf("broker-%c.log", 'a'+i))}
		if err := b.start(ctx); err != nil {
			return w, err
		}
		w.brokers = append(w.brokers, b)
		w.lb.add(addr)
	}
	logf("two agent-broker processes on one PostgreSQL behind %s (logs in %s)", w.brokerURL(), dir)
	return w, nil
}

func (w *world) close() {
	for _, b := range w.brokers {
		b.kill()
	}
	if w.lb != nil {
		w.lb.close()
	}
	if w.iss != nil {
		_ = w.iss.Close()
	}
	if w.pg != nil {
		w.pg.Stop()
	}
	if w.c != nil {
		w.c.Stop()
	}
	if !w.cfg.KeepLogs {
		_ = os.RemoveAll(w.dir)
	}
}

// brokerConfig grants every run of acme/* full access to ConfigMaps in the
// work namespace through a JIT ServiceAccount. Both brokers read the same
// file: publicURL is the balancer, as behind a Kubernetes Service.
func (w *world) brokerConfig() string {
	return fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: %[1]s
store:
  url: %[2]s
reconcileInterval: %[3]s
issuers:
- issuer: %[4]s
  preset: github
  audiences: [%[1]s]
clusters:
- name: %[5]s
  server: %[6]s
  caData: %[7]s
  backend:
    type: kubernetes
    kubernetes:
      kubeconfig: %[8]s
      namespace: %[9]s
trustRules:
- name: soak
  issuer: %[4]s
  match:
    repository: "acme/*"
  cluster: %[5]s
  ttl: 30m
  grant:
    namespaces: [%[10]s]
    rules:
    - verbs: [get, list, watch, create, update, patch, delete]
      apiGroups: [""]
      resources: [configmaps]
`, w.brokerURL(), w.dsn, w.cfg.Reconcile, w.iss.URL, clusterName, w.c.Server,
		base64.StdEncoding.EncodeToString(w.c.CAData), w.c.AdminKubeconfig, brokerNS, workNS)
}

// binaries finds kubectl-agent and agent-broker in binDir (make build puts
// them in ./bin), or builds them into dir.
func binaries(ctx context.Context, binDir, dir string) (agent, broker string, err error) {
	agent, broker = filepath.Join(binDir, "kubectl-agent"), filepath.Join(binDir, "agent-broker")
	if binDir != "" && exists(agent) && exists(broker) {
		return agent, broker, nil
	}
	out := filepath.Join(dir, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out+"/",
		"github.com/kubectl-agent/kubectl-agent/cmd/kubectl-agent", "github.com/kubectl-agent/kubectl-agent/cmd/agent-broker")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building kubectl-agent and agent-broker: %w\n%s", err, b)
	}
	return filepath.Join(out, "kubectl-agent"), filepath.Join(out, "agent-broker"), nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// brokerProc is one agent-broker serve process.
type brokerProc struct {
	name, bin, config, addr, logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs the broker and waits until /readyz answers 200.
func (b *brokerProc) start(ctx context.Context) error {
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(b.bin, "serve", "--config", b.config, "--listen", b.addr, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Killed with the soak even if it dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", b.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + b.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting; log:\n%s", b.name, tail(b.logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 60s; log:\n%s", b.name, tail(b.logPath))
		}
	}
}

// kill sends SIGKILL (a crash, no graceful shutdown) and waits for the exit.
func (b *brokerProc) kill() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(bytes.TrimSpace(b))
}

// balancer is a loopback TCP load balancer: round robin over the brokers,
// skipping one that refuses connections, as a Service in front of two
// replicas does once the dead one fails its probe. Connections to a killed
// broker break, and clients retry.
type balancer struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	next     atomic.Uint64
}

func newBalancer() (*balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the load balancer: %w", err)
	}
	b := &balancer{ln: ln}
	go b.serve()
	return b, nil
}

func (b *balancer) Addr() string { return b.ln.Addr().String() }

func (b *balancer) add(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append(b.backends, addr)
}

func (b *balancer) close() { _ = b.ln.Close() }

func (b *balancer) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go b.handle(c)
	}
}

func (b *balancer) handle(c net.Conn) {
	defer c.Close()
	b.mu.Lock()
	backends := append([]string(nil), b.backends...)
	b.mu.Unlock()
	if len(backends) == 0 {
		return
	}
	first := int(b.next.Add(1))
	var up net.Conn
	for i := range backends {
		var err error
		up, err = net.DialTimeout("tcp", backends[(first+i)%len(backends)], 2*time.Second)
		if err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	// HTTP/1.1 never half-closes: when either side ends, both do, so a
	// client's idle connection to a killed broker breaks at once.
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
}
