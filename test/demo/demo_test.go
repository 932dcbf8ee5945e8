package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m, cluster.Main)) }

// buildBinaries is the folder of kubectl-agent and agent-broker built from
// this tree (once per test process), so the test plays the demo with the
// code under test (not a stale ./bin).
func buildBinaries(t *testing.T) string {
	t.Helper()
	agent, _ := agenttest.Binaries(t)
	return filepath.Dir(agent)
}

// The whole demo against the package's control plane: every step checks its
// own outcome and run returns an error when one does not behave as claimed;
// the story says what each step claims, and nothing it started is left. It
// runs again on the same control plane (-count=2), as make demo runs again.
func TestDemo(t *testing.T) {
	c := cluster.Shared(t)
	bin := buildBinaries(t)
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "ka-demo-*"))

	var out agenttest.SyncBuffer // the story; the demo writes from two goroutines
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	err := run(ctx, Options{Cluster: c, BinDir: bin, Out: &out})
	t.Logf("demo output (%s):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	story := out.String()
	for _, want := range []string{
		"$ kubectl agent exec --transcript 1-deploy.transcript.jsonl -- kubectl apply -n shop-",
		`deployment.apps/web created`,
		`Error from server (Forbidden)`,
		`password: ` + mask.PlaceholderB64,
		`namespace "staging-`,
		`approved apr-`,
		"hello from the web pod",
		"HELLO",
		"verification failed",
		"demo passed in",
	} {
		if !strings.Contains(story, want) {
			t.Errorf("the story lacks %q", want)
		}
	}
	if strings.Contains(story, "\x1b[") {
		t.Error("escape codes in output that is not a terminal")
	}
	for _, step := range []string{"1. deploy", "2. delete namespace kube-system", "3. read Secret", "4. delete namespace staging", "5. exec into Pod", "6. verify"} {
		if !strings.Contains(story, "▸ "+step) {
			t.Errorf("no step line %q", step)
		}
	}
	// The broker process is stopped: its port no longer answers.
	m := regexp.MustCompile(`agent-broker on SQLite at (http://\S+)`).FindStringSubmatch(story)
	if m == nil {
		t.Fatal("the story does not say where the broker listens")
	}
	if resp, err := http.Get(m[1] + "/readyz"); err == nil {
		resp.Body.Close()
		t.Errorf("the broker at %s still answers after the demo", m[1])
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "ka-demo-*"))
	if len(after) > len(before) {
		t.Errorf("the demo left temp dirs: %v (before: %v)", after, before)
	}
}

// A step whose claim does not hold fails the demo, with the step named, and
// the demo goes no further: here the deny rule has another name than the one
// step 2 says denies the delete.
func TestDemoFailsWhenAClaimDoesNot(t *testing.T) {
	c := cluster.Shared(t)
	bin := buildBinaries(t)
	var out agenttest.SyncBuffer // the story; the demo writes from two goroutines
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rename := func(cfg string) string {
		edited := strings.Replace(cfg, "- name: system-namespaces-stay", "- name: keep-system-namespaces", 1)
		if edited == cfg {
			t.Error("the broker config has no rule system-namespaces-stay")
		}
		return edited
	}
	err := run(ctx, Options{Cluster: c, BinDir: bin, Out: &out, editConfig: rename})
	var se *stepError
	if !errors.As(err, &se) || se.step != "2 delete kube-system" {
		t.Fatalf("demo with a renamed rule: %v, want a failure at step 2\n%s", err, out.String())
	}
	story := out.String()
	if !strings.Contains(story, `✗ kubectl did not print the Forbidden line naming rule system-namespaces-stay`) {
		t.Errorf("the story does not say what failed:\n%s", story)
	}
	if !strings.Contains(story, `policy rule "keep-system-namespaces"`) {
		t.Errorf("the delete was not denied by the renamed rule:\n%s", story)
	}
	if strings.Contains(story, "3. read Secret") {
		t.Error("the demo went on after a failed step")
	}
}

// tamper edits exactly the line holding the greeting, and nothing else.
func TestTamper(t *testing.T) {
	dir := t.TempDir()
	from := filepath.Join(dir, "a.jsonl")
	lines := []string{`{"seq":0,"type":"start"}`, `{"seq":1,"type":"stream","stream":{"channel":"stdout","data":"hello from the web pod\n"}}`, `{"seq":2,"type":"end"}`}
	if err := os.WriteFile(from, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(dir, "b.jsonl")
	n, err := tamper(from, to)
	if err != nil || n != 2 {
		t.Fatalf("tamper: line %d, %v", n, err)
	}
	b, _ := os.ReadFile(to)
	got := strings.Split(string(b), "\n")
	if got[0] != lines[0] || got[2] != lines[2] || !strings.Contains(got[1], "HELLO from the web pod") {
		t.Fatalf("tampered copy:\n%s", b)
	}
	if _, err := tamper(to, filepath.Join(dir, "c.jsonl")); err == nil {
		t.Fatal("tamper found a greeting in a copy that has none left")
	}
}

func TestShellLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "pods"}, "kubectl get pods"},
		{[]string{"exec", "web", "--", "sh", "-c", `echo "hi $USER"`}, `kubectl exec web -- sh -c 'echo "hi $USER"'`},
		{[]string{"it's"}, `kubectl 'it'\''s'`},
		{[]string{""}, "kubectl ''"},
	} {
		if got := shellLine("/x/kubectl", tc.args); got != tc.want {
			t.Errorf("shellLine(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}

func TestIndentWriter(t *testing.T) {
	var out, capture bytes.Buffer
	iw := &indentWriter{w: &out, capture: &capture}
	fmt.Fprint(iw, "one\ntw")
	fmt.Fprint(iw, "o\nthree")
	iw.Flush()
	if got, want := out.String(), "    one\n    two\n    three\n"; got != want {
		t.Errorf("indented %q, want %q", got, want)
	}
	if capture.String() != "one\ntwo\nthree" {
		t.Errorf("captured %q", capture.String())
	}
}

// Ctrl-C in the middle of a step (SIGINT to the demo's whole process group,
// as a terminal sends it): the demo exits 130 and leaves no process and no
// folder behind: not the control plane, not the broker, not kubectl-agent.
func TestInterruptCleansUp(t *testing.T) {
	bin := buildBinaries(t)
	demoBin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", demoBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	cmd := exec.Command(demoBin, "--bin", bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out agenttest.SyncBuffer // the story; the demo writes from two goroutines
	var errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

	// Wait for step 1 to start; by then the control plane and broker run.
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(out.String(), "▸ 1. deploy") {
		select {
		case err := <-waited:
			t.Fatalf("the demo ended before step 1: %v\n%s%s", err, out.String(), errOut.String())
		case <-deadline:
			t.Fatalf("no step 1 after 2 minutes:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	kids := children(t, cmd.Process.Pid)
	var dirs []string
	tmp := regexp.MustCompile(regexp.QuoteMeta(os.TempDir()) + `/ka-(?:cluster|demo)-[0-9]+`)
	for _, k := range kids {
		dirs = append(dirs, tmp.FindAllString(k.cmdline, -1)...)
	}
	if len(kids) < 4 || len(dirs) == 0 {
		t.Fatalf("expected etcd, kube-apiserver, kwok and agent-broker under the demo, found %+v", kids)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-waited:
	case <-time.After(60 * time.Second):
		t.Fatalf("the demo did not exit within 60s of SIGINT:\n%s", out.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 || !strings.Contains(errOut.String(), "demo interrupted") {
		t.Errorf("after SIGINT: %v, stderr %q; want exit 130 and a line saying so", err, errOut.String())
	}
	for _, k := range kids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k.pid)); err == nil && string(b) == k.raw {
			t.Errorf("process %d is still running: %s", k.pid, k.cmdline)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("folder %s is left behind", d)
		}
	}
}

type proc struct {
	pid          int
	raw, cmdline string
}

// children lists the processes whose parent is pid.
func children(t *testing.T, pid int) []proc {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var out []proc
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// Fields after the parenthesized command: state, ppid, ...
		rest := stat[bytes.LastIndexByte(stat, ')')+1:]
		f := strings.Fields(string(rest))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		out = append(out, proc{pid: p, raw: string(raw), cmdline: strings.ReplaceAll(string(raw), "\x00", " ")})
	}
	return out
}
