// Package approvals_test drives human approval end to end: a real
// kube-apiserver (test/e2e/cluster), the real broker with the approvals
// handler mounted, the OIDC issuer stand-in for pipeline tokens, a minimal
// OIDC provider for reviewers' web sign-in, the real proxy with the real
// Approver, the pinned kubectl as the child, the `kubectl agent approvals`
// CLI with reviewers' own kubeconfigs, headless Chromium for the web page,
// and a real PostgreSQL shared by two brokers.
package approvals_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/approval"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/approvals"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/approvals/approvalstest"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/server"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/cli"
	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/proxy"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m, cluster.Main)) }

const audience = "https://broker.test"

// The policy every run gets from its trust rule.
const grantPolicy = `apiVersion: kubectl-agent.io/v1alpha1
kind: Policy
defaultAction: allow
rules:
- name: namespace-deletes-need-a-human
  action: approve
  verbs: [delete]
  apiGroups: [""]
  resources: [namespaces]
`

// A local policy that holds namespace deletes under a rule whose approvals
// expire fast (the broker's settings give it a short timeout).
const quickPolicy = `apiVersion: kubectl-agent.io/v1alpha1
kind: Policy
defaultAction: allow
rules:
- name: quick
  action: approve
  verbs: [delete]
  apiGroups: [""]
  resources: [namespaces]
`

type world struct {
	c        *cluster.Cluster
	iss      *oidcissuer.Issuer
	idp      *approvalstest.Provider
	brokerNS string
	hooks    *hookRecorder
	hookURL  string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	c := cluster.Shared(t)
	iss, err := oidcissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	idp, err := approvalstest.New(approvalstest.Person{Subject: "carol-1", Email: "carol@example.com", Groups: []string{"approvers"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Close() })
	w := &world{c: c, iss: iss, idp: idp, brokerNS: c.Namespace(t), hooks: &hookRecorder{}}
	hs := &http.Server{Handler: w.hooks, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	w.hookURL = "http://" + ln.Addr().String() + "/hook/T000/SECRET"
	w.reviewerRBAC(t)
	return w
}

// reviewerRBAC lets alice, the group reviewers (bob) and the group approvers
// (carol on the web) decide approvals; mallory gets nothing.
func (w *world) reviewerRBAC(t *testing.T) {
	ctx := context.Background()
	cs := w.c.Clientset()
	name := "kubectl-agent-approver-" + w.brokerNS
	_, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{api.ApprovalAPIGroup}, Resources: []string{api.ApprovalResource}, Verbs: []string{"get", "list", api.ApprovalVerb}}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{
			{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "alice"},
			{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "reviewers"},
			{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "approvers"},
		}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

func (w *world) configYAML(publicURL, storeURL string) string {
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
  cluster: test
  ttl: 30m
  grant:
    clusterRules:
    - verbs: [get, list, delete]
      apiGroups: [""]
      resources: [namespaces]
    - verbs: [get, list]
      apiGroups: ["", apps, batch, networking.k8s.io, rbac.authorization.k8s.io]
      resources: ["*"]
  approvals:
    timeout: 3m
    webhook: %[11]s
    rules:
      quick:
        timeout: 6s
  policy: |
%[10]s
`, publicURL, strings.TrimPrefix(publicURL, "http://"), storeURL, w.iss.URL, audience,
		w.c.Server, base64.StdEncoding.EncodeToString(w.c.CAData), w.c.AdminKubeconfig, w.brokerNS, indent(grantPolicy, "    "), w.hookURL)
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// broker is one broker instance with the approvals handler mounted.
type broker struct {
	URL       string
	Store     store.Store
	Approvals *approvals.Handler
}

// hookRecorder is a chat webhook receiver.
type hookRecorder struct {
	mu   sync.Mutex
	msgs []approvals.WebhookMessage
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m approvals.WebhookMessage
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad message", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (h *hookRecorder) find(id string) (approvals.WebhookMessage, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m.Text, id) {
			return m, true
		}
	}
	return approvals.WebhookMessage{}, false
}

func (w *world) startBroker(t *testing.T, storeURL string) *broker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	file := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(file, []byte(w.configYAML(url, storeURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("loading the test config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	backends, err := server.BuildBackends(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&testWriter{t: t}, nil))
	srv, err := server.New(ctx, server.Options{Config: cfg, Store: st, Backends: backends, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	settings, err := approvals.ParseSettings(cfg.TrustRules)
	if err != nil {
		t.Fatal(err)
	}
	clusters, err := approvals.ClusterConfigs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := approvals.NewKube(clusters, nil)
	if err != nil {
		t.Fatal(err)
	}
	cookieKey := []byte("0123456789abcdef0123456789abcdef-shared-by-brokers")
	h, err := approvals.NewHandler(ctx, approvals.Config{
		Store: st, Sessions: approvals.DPoPSessions(srv.Keys(), st, url, nil), Reviewers: kube, Settings: settings,
		PublicURL: url, Logger: log, PollInterval: 100 * time.Millisecond,
		Web: &approvals.WebConfig{Issuer: w.idp.URL, ClientID: w.idp.ClientID, ClientSecret: w.idp.ClientSecret, CookieSecret: cookieKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range approvals.Routes() {
		mux.Handle(p, h)
	}
	mux.Handle("/", srv.Handler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		cancel()
		_ = st.Close()
	})
	return &broker{URL: url, Store: st, Approvals: h}
}

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("broker: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// sink collects transcript events.
type sink struct {
	mu     sync.Mutex
	events []transcript.Event
}

func (s *sink) Append(_ context.Context, ev transcript.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, ev)
	return nil
}

func (s *sink) approvals() []transcript.ApprovalEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []transcript.ApprovalEvent
	for _, e := range s.events {
		if e.Approval != nil {
			out = append(out, *e.Approval)
		}
	}
	return out
}

// run is one pipeline run: a session at the broker, the proxy with the real
// Approver, and a kubeconfig for the child.
type run struct {
	t          *testing.T
	w          *world
	session    *api.Session
	client     *session.Client
	kubeconfig string
	ui         *agenttest.SyncBuffer
	sink       *sink
	token      string // the run's cluster credential
}

// startRun exchanges a pipeline token of run runID (started by actor) at b
// and starts the proxy. localPolicy, when set, is the proxy's policy instead
// of the grant's (so that its rule is the one that holds the request).
func (w *world) startRun(t *testing.T, b *broker, runID, actor, localPolicy string) *run {
	t.Helper()
	ctx := context.Background()
	claims := w.iss.GitHubClaims("acme/app", runID, audience)
	claims["actor"] = actor
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := session.NewClient(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Exchange(ctx, w.iss.Mint(claims), "test", key)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	sc := c.WithSession(resp.AccessToken, key)
	cred := resp.Session.Credential
	upstream := &rest.Config{Host: w.c.Server, BearerToken: cred.Token, TLSClientConfig: rest.TLSClientConfig{CAData: w.c.CAData}}
	base, err := policy.Parse([]byte(resp.Session.Policy), "grant")
	if err != nil {
		t.Fatal(err)
	}
	pol := base
	if localPolicy != "" {
		if pol, err = policy.Parse([]byte(localPolicy), "local"); err != nil {
			t.Fatal(err)
		}
	}
	var rules []mask.Rule
	for _, r := range pol.Mask() {
		rules = append(rules, mask.Rule{Kinds: r.Kinds, Keys: r.Keys})
	}
	pv, err := approval.NewPreviewer(upstream, mask.New(rules))
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, w: w, session: &resp.Session, client: sc, ui: &agenttest.SyncBuffer{}, sink: &sink{}, token: cred.Token}
	ap, err := approval.New(approval.Options{Broker: sc, Previewer: pv, Sink: r.sink, Out: r.ui,
		Getenv: func(k string) string { return map[string]string{"GITHUB_ACTIONS": "true"}[k] }, Command: []string{"kubectl", "delete", "ns"}})
	if err != nil {
		t.Fatal(err)
	}
	px, err := proxy.New(proxy.Options{Upstream: upstream, Policy: pol, Approver: ap, Sink: r.sink})
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := px.Start(pctx); err != nil {
		t.Fatal(err)
	}
	r.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*px.Kubeconfig("default"), r.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return r
}

type result struct {
	stdout, stderr string
	code           int
}

// kubectl runs the pinned kubectl through the run's proxy in the background.
func (r *run) kubectl(args ...string) <-chan result {
	out := make(chan result, 1)
	go func() {
		cmd := exec.Command(r.w.c.KubectlPath(), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+r.kubeconfig, "KUBECACHEDIR="+filepath.Join(filepath.Dir(r.kubeconfig), "cache"))
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
			se.WriteString(err.Error())
		}
		out <- result{so.String(), se.String(), code}
	}()
	return out
}

// pending waits until the run has a pending approval at b and returns it.
func (r *run) pending(b *broker) store.Approval {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		list, err := b.Store.ListPendingApprovals(context.Background(), time.Now())
		if err != nil {
			r.t.Fatal(err)
		}
		for _, a := range list {
			if a.SessionID == r.session.ID {
				return a
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("no approval was filed for session %s; approver output:\n%s", r.session.ID, r.ui.String())
	return store.Approval{}
}

func wait(t *testing.T, ch <-chan result, d time.Duration) result {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(d):
		t.Fatalf("kubectl did not finish within %s", d)
		return result{}
	}
}

// agent runs `kubectl agent ARGS...` in process and returns its output and exit code.
func agent(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := cli.Execute(context.Background(), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return out.String(), errOut.String(), code
}

// namespaceDeleting reports whether ns has a deletion timestamp (no
// controller-manager runs, so a deleted namespace stays Terminating).
func (w *world) namespaceDeleting(t *testing.T, ns string) bool {
	t.Helper()
	got, err := w.c.Clientset().CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading namespace %s: %v", ns, err)
	}
	return got.DeletionTimestamp != nil
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
