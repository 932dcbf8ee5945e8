// Package broker_test drives agent-broker end to end: a real kube-apiserver
// (test/e2e/cluster), the OIDC issuer stand-in, the broker serving over
// loopback HTTP with a real store, the real session client, and the pinned
// kubectl using the credentials the broker issued.
package broker_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/jit"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/server"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m, cluster.Main)) }

const audience = "https://broker.test"

// clock is a broker clock that tests move forward.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// env is one test's world: an issuer, the broker's namespace, a namespace the
// trust rule grants, and one it does not.
type env struct {
	c        *cluster.Cluster
	iss      *oidcissuer.Issuer
	brokerNS string
	workNS   string
	otherNS  string
	storeURL string
}

func newEnv(t *testing.T) *env { return newEnvB(t) }

func newEnvB(t testing.TB) *env {
	t.Helper()
	c := cluster.Shared(t)
	iss, err := oidcissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	return &env{
		c: c, iss: iss,
		brokerNS: c.Namespace(t), workNS: c.Namespace(t), otherNS: c.Namespace(t),
		storeURL: "sqlite://" + filepath.Join(t.TempDir(), "broker.db"),
	}
}

func (e *env) configYAML(publicURL, storeURL string) string {
	return fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: %[1]s
listen: %[2]s
store:
  url: %[3]s
reconcileInterval: 1h
issuers:
- issuer: %[4]s
  preset: github
  audiences: [%[5]s]
clusters:
- name: test
  server: %[6]s
  caData: %[7]s
  backend:
    type: kubernetes
    kubernetes:
      kubeconfig: %[8]s
      namespace: %[9]s
trustRules:
- name: deploy-main
  issuer: %[4]s
  match:
    repository: "acme/*"
    ref: refs/heads/main
  cluster: test
  ttl: 30m
  grant:
    namespaces: [%[10]s]
    rules:
    - verbs: [get, list, watch]
      apiGroups: [""]
      resources: [pods, configmaps]
    - verbs: [create]
      apiGroups: [""]
      resources: [configmaps]
  policy: |
    apiVersion: kubectl-agent.io/v1alpha1
    kind: Policy
    defaultAction: allow
`, publicURL, "127.0.0.1:0", storeURL, e.iss.URL, audience,
		e.c.Server, base64.StdEncoding.EncodeToString(e.c.CAData), e.c.AdminKubeconfig, e.brokerNS, e.workNS)
}

// broker is a broker instance serving on loopback.
type broker struct {
	URL    string
	Server *server.Server
	Store  store.Store
	Config *config.Config
	logs   *testWriter
	stop   func()
}

// Logs is everything the broker logged so far.
func (b *broker) Logs() string { return b.logs.String() }

// startBroker starts a broker instance on storeURL. Several instances on one
// store act like several brokers behind a load balancer.
func (e *env) startBroker(t testing.TB, storeURL string, clk *clock) *broker {
	t.Helper()
	return e.startBrokerAt(t, storeURL, clk, "")
}

// startBrokerAt starts a broker whose public URL is publicURL (a load
// balancer in front of it), or its own address when publicURL is empty.
func (e *env) startBrokerAt(t testing.TB, storeURL string, clk *clock, publicURL string) *broker {
	t.Helper()
	return e.startBrokerFull(t, storeURL, clk, publicURL, nil)
}

// startBrokerWith starts a broker whose config text edit changes.
func (e *env) startBrokerWith(t testing.TB, storeURL string, edit func(string) string) *broker {
	t.Helper()
	return e.startBrokerFull(t, storeURL, nil, "", edit)
}

func (e *env) startBrokerFull(t testing.TB, storeURL string, clk *clock, publicURL string, edit func(string) string) *broker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	if publicURL == "" {
		publicURL = url
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "broker.yaml")
	text := e.configYAML(publicURL, storeURL)
	if edit != nil {
		text = edit(text)
	}
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("loading the test config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, storeURL)
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	backends, err := server.BuildBackends(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now
	if clk != nil {
		now = clk.Now
	}
	logs := &testWriter{t: t}
	srv, err := server.New(ctx, server.Options{Config: cfg, Store: st, Backends: backends, Now: now,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var once sync.Once
	b := &broker{URL: url, Server: srv, Store: st, Config: cfg, logs: logs, stop: func() {
		once.Do(func() {
			cancel()
			<-done
			_ = st.Close()
		})
	}}
	t.Cleanup(b.stop)
	return b
}

// Stop stops the instance (its store stays on disk / in the database).
func (b *broker) Stop() { b.stop() }

// testWriter logs through t and keeps a copy.
type testWriter struct {
	t   testing.TB
	mu  sync.Mutex
	buf strings.Builder
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("broker: %s", strings.TrimSpace(string(p)))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	return len(p), nil
}

func (w *testWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// runner is a pipeline run: its key and its client.
type runner struct {
	key    ed25519.PrivateKey
	client *session.Client
}

func newRunner(t testing.TB, brokerURL string) *runner {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := session.NewClient(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	c.Attempts = 1
	return &runner{key: key, client: c}
}

func (r *runner) exchange(ctx context.Context, token string) (*api.TokenResponse, error) {
	return r.client.Exchange(ctx, token, "test", r.key)
}

func (r *runner) session(resp *api.TokenResponse) *session.Client {
	return r.client.WithSession(resp.AccessToken, r.key)
}

// apiError digs the broker's RFC 6749 error out of a client error.
func apiError(err error) *api.Error {
	var e *api.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// kubectlAs runs kubectl with a bearer token.
func (e *env) kubectlAs(t *testing.T, token string, args ...string) (string, string, int) {
	t.Helper()
	return e.c.Kubectl(t, []string{"KUBECONFIG=" + e.c.Kubeconfig(t, token)}, args...)
}

// sessionObjects lists the names of the objects the JIT backend made for a session.
func (e *env) sessionObjects(t *testing.T, id string) []string {
	t.Helper()
	ctx := context.Background()
	cs := e.c.Clientset()
	sel := metav1.ListOptions{LabelSelector: jit.LabelSession + "=" + id}
	var out []string
	sas, err := cs.CoreV1().ServiceAccounts(e.brokerNS).List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range sas.Items {
		out = append(out, "serviceaccount/"+o.Namespace+"/"+o.Name)
	}
	roles, err := cs.RbacV1().Roles("").List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range roles.Items {
		out = append(out, "role/"+o.Namespace+"/"+o.Name)
	}
	rbs, err := cs.RbacV1().RoleBindings("").List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rbs.Items {
		out = append(out, "rolebinding/"+o.Namespace+"/"+o.Name)
	}
	return out
}

var _ backend.Backend = (*jit.Backend)(nil)
