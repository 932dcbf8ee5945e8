package cluster_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

func TestServerVersionAndRBAC(t *testing.T) {
	c := cluster.Shared(t)
	if !strings.HasPrefix(c.Version, "v1.34.") {
		t.Fatalf("server version = %q, want the pinned v1.34.x", c.Version)
	}
	out, errOut, code := c.Kubectl(t, nil, "version", "-o", "json")
	if code != 0 || !strings.Contains(out, `"gitVersion": "v1.34.4"`) {
		t.Fatalf("kubectl version: code %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("kubectl version: %s", strings.Join(strings.Fields(out), " "))
	// The audit log records the Audit-ID a client sends, which is how a
	// transcript joins the apiserver's own record.
	id := "3b0d5e4e-0c2c-4c2a-9b52-5d1f2f6f9a11"
	if _, err := c.Clientset().CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/default").SetHeader("Audit-ID", id).DoRaw(context.Background()); err != nil {
		t.Fatal(err)
	}
	audit, err := os.ReadFile(c.AuditLog)
	if err != nil || !strings.Contains(string(audit), `"auditID":"`+id+`"`) {
		t.Fatalf("the audit log does not hold Audit-ID %s (%v)", id, err)
	}
	// mallory has no RBAC: RBAC is really on.
	_, errOut, code = c.Kubectl(t, []string{"KUBECONFIG=" + c.Kubeconfig(t, c.UserToken("mallory"))}, "get", "pods", "-n", "default")
	if code == 0 || !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("mallory listed pods (code %d): %s", code, errOut)
	}
}

func TestKwokPodExecLogsPortForward(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	c.RunningPod(t, ns, "web")

	// kwok v0.7.0 reports a command's non-zero exit as an internal error, so
	// kubectl exits 1 (a real kubelet gives the command's own code).
	out, errOut, code := c.Kubectl(t, nil, "exec", "-n", ns, "web", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if code == 0 || out != "out\n" || !strings.Contains(errOut, "err\n") || !strings.Contains(errOut, "exit status 7") {
		t.Fatalf("exec: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = c.Kubectl(t, nil, "logs", "-n", ns, "web")
	if code != 0 || !strings.Contains(out, c.LogLines[0]) {
		t.Fatalf("logs: code %d, stdout %q, stderr %q", code, out, errOut)
	}

	// port-forward: run kubectl in the background and fetch through it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pf := cluster.StartKubectl(ctx, t, c, nil, "port-forward", "-n", ns, "pod/web", "18080:8080")
	defer pf.Stop()
	var body string
	for ctx.Err() == nil {
		resp, err := http.Get("http://127.0.0.1:18080/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(body, "hello from kwok") {
		t.Fatalf("port-forward answered %q; kubectl said: %s", body, pf.Output())
	}
}
