package proxy_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func TestExecLogsPortForwardThroughProxy(t *testing.T) {
	c := cluster.Shared(t)
	ns := c.Namespace(t)
	c.RunningPod(t, ns, "web")
	pol := writeFile(t, "policy.yaml", denyPolicy)

	// exec: stdout, stderr and exit code as kubectl gets them directly.
	args := []string{"exec", "-n", ns, "web", "--", "sh", "-c", "echo out; echo err >&2; exit 7"}
	dOut, dErr, dCode := c.Kubectl(t, nil, args...)
	r := kubectl(t, c, pol, args...)
	if r.code != dCode || r.stdout != dOut || !strings.Contains(r.stderr, "err\n") || !strings.Contains(dErr, "err\n") {
		t.Fatalf("exec through proxy: code %d stdout %q stderr %q; direct: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr, dCode, dOut, dErr)
	}
	// exec -i: stdin reaches the command. (head, not cat: kwok v0.7.0 does
	// not pass stdin's end to the process, directly or through the proxy.)
	r = agent(t, c, "hello stdin\n", nil, []string{"--policy", pol}, c.KubectlPath(), "exec", "-i", "-n", ns, "web", "--", "head", "-n1")
	if r.code != 0 || r.stdout != "hello stdin\n" {
		t.Fatalf("exec -i: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// exec -ti under a real terminal (script(1) gives kubectl a pty).
	if _, err := exec.LookPath("script"); err == nil {
		// The sleep: kwok v0.7.0 can close a TTY session before it copies
		// the process's last output when the process exits at once; kubectl
		// straight to the apiserver loses "tty-ok" too (seen 1 in 30).
		line := bins.agent + " --kubeconfig " + c.AdminKubeconfig + " exec -- " + c.KubectlPath() + " exec -ti -n " + ns + " web -- sh -c 'echo tty-ok; sleep 0.5'"
		cmd := exec.Command("script", "-qec", line, "/dev/null")
		cmd.Env = append(os.Environ(), "NO_COLOR=1")
		// script ends the session when its stdin reaches EOF, which can cut
		// the command's output short: give it a stdin that stays open.
		stdinR, stdinW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = stdinR
		out, err := cmd.CombinedOutput()
		stdinW.Close()
		stdinR.Close()
		if err != nil || !strings.Contains(string(out), "tty-ok") {
			t.Fatalf("exec -ti: %v\n%s", err, out)
		}
	} else {
		t.Log("SKIPPED the exec -ti check: script(1) from util-linux is not installed, so there is no pty to give kubectl")
	}
	// logs and logs -f.
	r = kubectl(t, c, pol, "logs", "-n", ns, "web")
	if r.code != 0 || !strings.Contains(r.stdout, c.LogLines[0]) {
		t.Fatalf("logs: %d %q %s", r.code, r.stdout, r.stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	follow := exec.CommandContext(ctx, bins.agent, "--kubeconfig", c.AdminKubeconfig, "exec", "--", c.KubectlPath(), "logs", "-f", "-n", ns, "web")
	stdout, _ := follow.StdoutPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, 256)
	buf := make([]byte, 256)
	for !strings.Contains(string(got), c.LogLines[len(c.LogLines)-1]) {
		n, err := stdout.Read(buf)
		if err != nil {
			t.Fatalf("logs -f ended before the last line: %v (got %q)", err, got)
		}
		got = append(got, buf[:n]...)
	}
	// Still following (not buffered to the end): the process is alive.
	if follow.ProcessState != nil {
		t.Fatal("logs -f exited")
	}
	_ = follow.Process.Signal(os.Interrupt)
	_ = follow.Wait()

	// port-forward through the proxy (SPDY or WebSocket upgrade).
	pf := exec.CommandContext(ctx, bins.agent, "--kubeconfig", c.AdminKubeconfig, "exec", "--", c.KubectlPath(), "port-forward", "-n", ns, "pod/web", "18181:8080")
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pf.Process.Signal(os.Interrupt); _ = pf.Wait() }()
	var body string
	for ctx.Err() == nil {
		resp, err := http.Get("http://127.0.0.1:18181/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(body, "hello from kwok") {
		t.Fatalf("port-forward answered %q", body)
	}
}
