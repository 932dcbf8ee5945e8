package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/proxy"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

// namespaceIntact fails the test when ns is gone or being deleted.
func namespaceIntact(t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	got, err := c.Clientset().CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	if got.DeletionTimestamp != nil {
		t.Fatalf("namespace %s is being deleted", ns)
	}
}

func TestNamespaceDeletionDenied(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	pol := writeFile(t, "policy.yaml", denyPolicy)
	nsFile := writeFile(t, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n")

	cases := map[string][]string{
		"delete ns":         {c.KubectlPath(), "delete", "ns", ns},
		"delete namespace/": {c.KubectlPath(), "delete", "namespace/" + ns},
		"delete -f":         {c.KubectlPath(), "delete", "-f", nsFile},
		"delete --raw":      {c.KubectlPath(), "delete", "--raw", "/api/v1/namespaces/" + ns},
		"delete --raw //":   {c.KubectlPath(), "delete", "--raw", "//api/v1/namespaces/" + ns},
		"delete --raw %":    {c.KubectlPath(), "delete", "--raw", "/api/v1/namespaces/%" + fmt.Sprintf("%X", ns[0]) + ns[1:]},
		"client-go":         {bins.deletens, ns},
	}
	for name, child := range cases {
		t.Run(name, func(t *testing.T) {
			r := agent(t, c, "", nil, []string{"--policy", pol}, child...)
			if r.code == 0 {
				t.Fatalf("exit 0, want the child's failure; stdout %q stderr %q", r.stdout, r.stderr)
			}
			namespaceIntact(t, c, ns)
			// kubectl cleans "//" itself; the request then names no
			// namespace at all and the apiserver says NotFound.
			if !strings.Contains(strings.ToLower(r.stderr), "forbidden") && !strings.Contains(r.stderr, "BadRequest") &&
				!(name == "delete --raw //" && strings.Contains(r.stderr, "NotFound")) {
				t.Fatalf("stderr does not say why: %q", r.stderr)
			}
			t.Logf("stderr: %s", r.stderr)
		})
	}

	// The kubectl message, the styled denial line and the summary.
	r := kubectl(t, c, pol, "delete", "ns", ns)
	want := fmt.Sprintf(`Error from server (Forbidden): delete namespaces %q is forbidden: denied by kubectl-agent policy rule "never-delete-namespaces": namespaces are never deleted from pipelines`, ns)
	if !strings.Contains(r.stderr, want) {
		t.Fatalf("stderr lacks %q:\n%s", want, r.stderr)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf(`✗ denied DELETE namespaces/%s by rule "never-delete-namespaces"`, ns)) ||
		!strings.Contains(r.stderr, "kubectl-agent: ") || !strings.Contains(r.stderr, "1 denied") {
		t.Fatalf("no denial line or summary:\n%s", r.stderr)
	}
	namespaceIntact(t, c, ns)
}

func TestApproveInLocalModeIsDenied(t *testing.T) {
	c := cluster.Shared(t)
	pol := writeFile(t, "policy.yaml", denyPolicy)
	r := kubectl(t, c, pol, "create", "namespace", "prod-x")
	if r.code == 0 || !strings.Contains(r.stderr, `approval required by rule "prod-needs-a-human": approvals need a broker`) {
		t.Fatalf("code %d stderr %s", r.code, r.stderr)
	}
}

func TestGitHubAnnotationsAndStepSummary(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	pol := writeFile(t, "policy.yaml", denyPolicy)
	summary := writeFile(t, "summary.md", "")
	r := agent(t, c, "", []string{"GITHUB_ACTIONS=true", "GITHUB_STEP_SUMMARY=" + summary}, []string{"--policy", pol},
		c.KubectlPath(), "delete", "ns", ns)
	if r.code == 0 || !strings.Contains(r.stderr, "::error title=kubectl-agent denied a request::") {
		t.Fatalf("no annotation: %s", r.stderr)
	}
	b := readFile(t, summary)
	if !strings.Contains(b, "| Request | Rule | Message |") || !strings.Contains(b, "never-delete-namespaces") {
		t.Fatalf("step summary:\n%s", b)
	}
}

func TestAllowedWork(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	pol := writeFile(t, "policy.yaml", denyPolicy)
	dep := writeFile(t, "dep.yaml", `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
`)
	for _, args := range [][]string{
		{"apply", "-n", ns, "-f", dep},
		{"scale", "-n", ns, "deployment/web", "--replicas=3"},
		{"get", "-n", ns, "deployment/web", "-o", "jsonpath={.spec.replicas}"},
	} {
		r := kubectl(t, c, pol, args...)
		if r.code != 0 {
			t.Fatalf("kubectl %v: code %d, stderr %s", args, r.code, r.stderr)
		}
		if args[0] == "get" && r.stdout != "3" {
			t.Fatalf("replicas = %q, want 3", r.stdout)
		}
	}
	// -n through the agent sets the child's namespace.
	r := agent(t, c, "", nil, []string{"-n", ns}, c.KubectlPath(), "get", "deployment", "web", "-o", "name")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "deployment.apps/web" {
		t.Fatalf("namespace from -n: code %d stdout %q stderr %s", r.code, r.stdout, r.stderr)
	}
}

func TestBadPolicyRefusesToStart(t *testing.T) {
	c := cluster.Shared(t)
	pol := writeFile(t, "policy.yaml", "kind: Policy\nrules: [{action: maybe}]\n")
	marker := writeFile(t, "marker", "")
	r := agent(t, c, "", nil, []string{"--policy", pol}, "rm", marker)
	if r.code != 3 || len(strings.Split(strings.TrimSpace(r.stderr), "\n")) != 1 {
		t.Fatalf("code %d (want 3), stderr %q", r.code, r.stderr)
	}
	if readFile(t, marker) != "" {
		t.Fatal("unreachable")
	}
}

// inProcess starts the proxy in the test process, for raw HTTP clients.
func inProcess(t testing.TB, c *cluster.Cluster, polText string) *proxy.Proxy {
	t.Helper()
	pol, err := policy.Parse([]byte(polText), "test")
	if err != nil {
		t.Fatal(err)
	}
	px, err := proxy.New(proxy.Options{Upstream: c.RESTConfig(), Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := px.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return px
}

func proxyClient(t testing.TB, px *proxy.Proxy) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(px.CAData()) {
		t.Fatal("bad CA")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// rawRequest sends exactly this request line to the proxy (no client-side
// path cleaning), and returns the status and body.
func rawRequest(t *testing.T, px *proxy.Proxy, method, rawPath string, token string) (int, string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(px.CAData())
	addr := strings.TrimPrefix(px.URL(), "https://")
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", method, rawPath, addr, token)
	resp, err := http.ReadResponse(newReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestNonCanonicalPathsRefused(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	px := inProcess(t, c, denyPolicy)
	esc := fmt.Sprintf("%%%X", ns[0]) + ns[1:]
	for _, p := range []string{
		"/api/v1/namespaces/" + esc,
		"//api/v1/namespaces/" + ns,
		"/api/v1/namespaces/" + ns + "/",
		"/api/v1/namespaces/./" + ns,
		"/api/v1/namespaces/x/../" + ns,
		"/api/v1/%6eamespaces/" + ns,
		"/api/v1/namespaces/" + ns + "%2F",
	} {
		code, body := rawRequest(t, px, "DELETE", p, px.Token())
		if code != http.StatusBadRequest {
			t.Errorf("DELETE %s: %d %s, want 400", p, code, body)
			continue
		}
		var st metav1.Status
		if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" || st.Code != 400 {
			t.Errorf("DELETE %s: body is not a Status: %s", p, body)
		}
	}
	namespaceIntact(t, c, ns)

	// The canonical path is denied by policy, with a Forbidden Status.
	code, body := rawRequest(t, px, "DELETE", "/api/v1/namespaces/"+ns, px.Token())
	var st metav1.Status
	_ = json.Unmarshal([]byte(body), &st)
	if code != 403 || st.Reason != metav1.StatusReasonForbidden || st.Details == nil || st.Details.Name != ns || st.Details.Kind != "namespaces" {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	// Wrong and missing tokens get 401.
	for _, tok := range []string{"", "x" + px.Token()[1:], px.Token() + "x"} {
		if code, _ := rawRequest(t, px, "GET", "/api/v1/namespaces/"+ns, tok); code != 401 {
			t.Fatalf("token %q: %d, want 401", tok, code)
		}
	}
	namespaceIntact(t, c, ns)
	if cnt := px.Counts(); cnt.Denied != 1 || cnt.Errors < 7 {
		t.Fatalf("counts %+v", cnt)
	}
}

func TestProtobufBodyRefused(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	px := inProcess(t, c, denyPolicy)
	req, _ := http.NewRequest("POST", px.URL()+"/api/v1/namespaces/"+ns+"/configmaps", strings.NewReader("k8s\x00\x0a\x0f"))
	req.Header.Set("Authorization", "Bearer "+px.Token())
	req.Header.Set("Content-Type", "application/vnd.kubernetes.protobuf")
	resp, err := proxyClient(t, px).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("protobuf body: %d, want 415", resp.StatusCode)
	}
}

func TestAuditIDSentUpstream(t *testing.T) {
	c := cluster.Shared(t)
	px := inProcess(t, c, denyPolicy)
	req, _ := http.NewRequest("GET", px.URL()+"/api/v1/namespaces/default", nil)
	req.Header.Set("Authorization", "Bearer "+px.Token())
	req.Header.Set("Audit-ID", "child-chosen")
	resp, err := proxyClient(t, px).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The apiserver echoes the Audit-ID it got: the proxy's own, not the child's.
	got := resp.Header.Get("Audit-Id")
	if resp.StatusCode != 200 || got == "" || got == "child-chosen" || len(got) != 36 {
		t.Fatalf("status %d Audit-Id %q", resp.StatusCode, got)
	}
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
