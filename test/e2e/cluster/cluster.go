// Package cluster starts a real local control plane for tests: etcd and
// kube-apiserver (RBAC on, static tokens, ServiceAccount keys) built pinned from
// test/controlplane, plus kwok, which makes a fake Node Ready, runs Pods that
// name it, and serves exec (as local processes), logs, attach and port-forward.
// A whole test package shares one control plane through Main.
package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// NodeName is the fake node that kwok manages; Pods with this nodeName run.
const NodeName = "kwok-node-0"

// People with static tokens, for reviewer and permission tests.
var people = map[string][]string{"alice": {"reviewers"}, "bob": {"reviewers"}, "mallory": nil}

// Cluster is a running local control plane.
type Cluster struct {
	Server          string // https://127.0.0.1:PORT
	CAData          []byte // PEM of the apiserver's CA
	AdminToken      string // static token of user "admin" in group system:masters
	AdminKubeconfig string // path of a kubeconfig using AdminToken
	Dir             string // scratch folder of this control plane
	Version         string // the apiserver's gitVersion
	AuditLog        string // the apiserver's audit log (JSON lines, level Metadata)

	// PortForwardTarget is a loopback HTTP server that port-forwards to any
	// kwok Pod reach; it answers every request with "hello from kwok".
	PortForwardTarget int
	// LogLines are what `kubectl logs` prints for any kwok Pod.
	LogLines []string

	binDir     string
	etcdURL    string
	userTokens map[string]string
	procs      []*exec.Cmd
	pfServer   *http.Server
	stopOnce   sync.Once
}

// Options tune Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kubectl and kwok. Default:
	// $KUBECTL_AGENT_TEST_BIN, else <repo>/.cache/bin (built when missing).
	BinDir string
	// APIServerArgs are added to kube-apiserver's flags (an authentication
	// webhook, say).
	APIServerArgs []string
}

// Start builds (if needed) and starts etcd, kube-apiserver and kwok. The caller
// must call Stop; Main does that for a test package.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	bin, err := binDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ka-cluster-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: dir, binDir: bin, userTokens: map[string]string{}}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, opts.APIServerArgs); err != nil {
		return nil, err
	}
	if err := c.startKwok(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func binDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("KUBECTL_AGENT_TEST_BIN")
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	if dir == "" {
		dir = filepath.Join(root, ".cache", "bin")
	}
	missing := false
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl", "kwok"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			missing = true
		}
	}
	if missing {
		script := filepath.Join(root, "test", "controlplane", "build.sh")
		fmt.Fprintf(os.Stderr, "cluster: building the pinned control plane into %s (about 5 minutes cold): %s %s\n", dir, script, dir)
		cmd := exec.Command(script, dir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("building the control plane failed (run %s %s by hand to see why): %w", script, dir, err)
		}
	}
	return dir, nil
}

// repoRoot finds the root module's folder from the working directory up.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/kubectl-agent/kubectl-agent\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("cluster: cannot find the kubectl-agent repository root above " + wd)
		}
	}
}

func (c *Cluster) start(ctx context.Context, name string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(c.binDir, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, and killed with the test binary even if it dies
	// without running Stop, so no control plane outlives its tests.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	c.procs = append(c.procs, cmd)
	return nil
}

// logTail returns the end of a component's log, for error messages.
func (c *Cluster) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, name+".log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	client, err := freePort()
	if err != nil {
		return err
	}
	peer, err := freePort()
	if err != nil {
		return err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	if err := c.start(ctx, "etcd",
		"--name=default", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return err
	}
	c.etcdURL = clientURL
	return waitFor(ctx, 30*time.Second, func() error {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	}, func() string { return c.logTail("etcd") })
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *Cluster) startAPIServer(ctx context.Context, extra []string) error {
	caPEM, err := writeServingCert(c.Dir, "apiserver")
	if err != nil {
		return err
	}
	c.CAData = caPEM
	saKey, saPub, err := writeServiceAccountKey(c.Dir)
	if err != nil {
		return err
	}
	c.AdminToken = randomToken()
	var tokens strings.Builder
	fmt.Fprintf(&tokens, "%s,admin,admin,\"system:masters\"\n", c.AdminToken)
	for name, groups := range people {
		t := randomToken()
		c.userTokens[name] = t
		fmt.Fprintf(&tokens, "%s,%s,%s,\"%s\"\n", t, name, name, strings.Join(groups, ","))
	}
	tokenFile := filepath.Join(c.Dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens.String()), 0o600); err != nil {
		return err
	}
	// The audit log: what the apiserver itself saw, to join with transcripts
	// by Audit-ID.
	auditPolicy := filepath.Join(c.Dir, "audit-policy.yaml")
	if err := os.WriteFile(auditPolicy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"), 0o600); err != nil {
		return err
	}
	c.AuditLog = filepath.Join(c.Dir, "audit.log")
	port, err := freePort()
	if err != nil {
		return err
	}
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", port)
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(c.Dir, "certs"),
		"--tls-cert-file=" + filepath.Join(c.Dir, "apiserver.crt"), "--tls-private-key-file=" + filepath.Join(c.Dir, "apiserver.key"),
		"--authorization-mode=RBAC", "--token-auth-file=" + tokenFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
		"--kubelet-preferred-address-types=InternalIP",
		"--enable-priority-and-fairness=false", "--v=1",
		"--audit-policy-file=" + auditPolicy, "--audit-log-path=" + c.AuditLog, "--audit-log-mode=blocking", "--audit-log-format=json",
	}
	if err := c.start(ctx, "kube-apiserver", append(args, extra...)...); err != nil {
		return err
	}
	c.AdminKubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := c.writeKubeconfig(c.AdminKubeconfig, c.AdminToken, "admin"); err != nil {
		return err
	}
	cs := c.Clientset()
	err = waitFor(ctx, 60*time.Second, func() error {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("readyz: %v %s", err, body)
		}
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			return err
		}
		c.Version = v.GitVersion
		// RBAC's bootstrap roles land just after readyz; wait for one.
		_, err = cs.RbacV1().ClusterRoles().Get(ctx, "cluster-admin", metav1.GetOptions{})
		return err
	}, func() string { return c.logTail("kube-apiserver") })
	if err != nil {
		return err
	}
	return nil
}

// writeKubeconfig writes a kubeconfig for c.Server authenticating with token.
func (c *Cluster) writeKubeconfig(path, token, user string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: %s@local
  context:
    cluster: local
    user: %s
    namespace: default
current-context: %s@local
`, c.Server, b64(c.CAData), user, token, user, user, user)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// Stop kills everything Start started and removes its folder (kept when
// KUBECTL_AGENT_TEST_KEEP is set, for debugging).
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.pfServer != nil {
			_ = c.pfServer.Close()
		}
		for i := len(c.procs) - 1; i >= 0; i-- {
			p := c.procs[i]
			if p.Process != nil {
				_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			}
		}
		for _, p := range c.procs {
			if p.Process != nil {
				_, _ = p.Process.Wait()
			}
		}
		if os.Getenv("KUBECTL_AGENT_TEST_KEEP") == "" {
			_ = os.RemoveAll(c.Dir)
		}
	})
}

// RESTConfig is an admin client config.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            c.Server,
		BearerToken:     c.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData},
		QPS:             200,
		Burst:           400,
	}
}

// Clientset is an admin clientset.
func (c *Cluster) Clientset() kubernetes.Interface {
	return kubernetes.NewForConfigOrDie(c.RESTConfig())
}

// BinDir holds the pinned binaries.
func (c *Cluster) BinDir() string { return c.binDir }

// KubectlPath is the pinned kubectl.
func (c *Cluster) KubectlPath() string { return filepath.Join(c.binDir, "kubectl") }

// UserToken returns the static token of a person: alice, bob or mallory.
func (c *Cluster) UserToken(name string) string {
	t, ok := c.userTokens[name]
	if !ok {
		panic("cluster: no static user " + name)
	}
	return t
}

func waitFor(ctx context.Context, timeout time.Duration, check func() error, logs func() string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waited %s: %v\n--- log tail ---\n%s", timeout, last, logs())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ensureDefaultServiceAccount creates the namespace's default ServiceAccount,
// which no controller-manager creates here.
func ensureDefaultServiceAccount(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
