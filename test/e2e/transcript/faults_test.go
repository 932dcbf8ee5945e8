package transcript_test

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/agenttest"
)

// lines counts a spool's complete lines.
func lines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// The broker is down for a whole run (the session is cached from an earlier
// command of the run): the run goes on, the spool keeps everything, and once
// the broker is back `transcript push` uploads it; nothing is lost.
func TestBrokerDownForTheWholeRun(t *testing.T) {
	e := setup(t)
	j := newJob(t, e.c, e.iss, e.b)
	if _, errOut, code := e.exec(t, j, nil, "--", "kubectl", "get", "configmaps", "-n", e.appNS); code != 0 {
		t.Fatalf("first exec: %s", errOut)
	}
	// The first command's spool stays (the broker holds it; the next
	// command that reaches the broker removes it).
	before := map[string]bool{}
	for _, s := range j.spools(t) {
		before[s] = true
	}
	e.b.Kill()
	out, errOut, code := e.exec(t, j, nil, "--", "kubectl", "get", "configmaps", "-n", e.appNS)
	if code != 0 || !strings.Contains(out, "app-config") {
		t.Fatalf("exec with the broker down: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "transcript push") {
		t.Errorf("exec did not say the transcript waits for a push:\n%s", errOut)
	}
	var spools []string
	for _, s := range j.spools(t) {
		if !before[s] {
			spools = append(spools, s)
		}
	}
	if len(spools) != 1 {
		t.Fatalf("new spools after the outage: %v", spools)
	}
	n := lines(t, spools[0])
	e.b.Restart(t)
	e.verify(t, spools[0]) // sealed locally, though the broker never saw it
	if out, errOut, code := agenttest.Run(t, e.agent, j.env, "transcript", "push", "--remove"); code != 0 {
		t.Fatalf("push: %s %s", out, errOut)
	}
	if s := j.spools(t); len(s) != 0 {
		t.Errorf("push --remove left %v", s)
	}
	l := e.list(t, "--run", j.runID)
	if len(l) != 2 {
		t.Fatalf("listed %v", l)
	}
	var found bool
	for _, ti := range l {
		if ti["sealed"] != true {
			t.Errorf("not sealed: %v", ti)
		}
		if int(ti["lines"].(float64)) == n {
			found = true
		}
	}
	if !found {
		t.Errorf("no listed transcript has the spool's %d lines: %v", n, l)
	}
}

// The broker restarts in the middle of a long run: the upload resumes and
// the broker ends up with the whole, sealed transcript.
func TestBrokerRestartMidRun(t *testing.T) {
	e := setup(t)
	j := newJob(t, e.c, e.iss, e.b)
	script := "kubectl get configmaps -n " + e.appNS + " && sleep 3 && kubectl get configmaps -n " + e.appNS + " && sleep 3 && kubectl get pods -n " + e.appNS
	cmd := exec.Command(e.agent, "exec", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), j.env...)
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the first request is done; the run is in its first sleep
	e.b.Kill()
	time.Sleep(2 * time.Second)
	e.b.Restart(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exec: %v\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "sealed and logged by the broker") {
		t.Fatalf("the upload did not resume to the seal:\n%s", errb.String())
	}
	if s := j.spools(t); len(s) != 1 {
		t.Fatalf("spools: %v", s) // kept: there was no --transcript FILE
	}
	n := lines(t, j.spools(t)[0])
	l := e.list(t, "--run", j.runID)
	if len(l) != 1 || l[0]["sealed"] != true || int(l[0]["lines"].(float64)) != n {
		t.Fatalf("after a restart mid-run: %v (spool has %d lines)", l, n)
	}
}

// The wrapper is killed with SIGKILL: what it spooled survives, the broker
// shows the transcript unsealed, and the run's next command uploads it.
func TestWrapperKilled(t *testing.T) {
	e := setup(t)
	j := newJob(t, e.c, e.iss, e.b)
	e.b.Kill() // nothing reaches the broker before the kill
	// A first command creates the session while the broker is up.
	e.b.Restart(t)
	if _, errOut, code := e.exec(t, j, nil, "--", "true"); code != 0 {
		t.Fatalf("first exec: %s", errOut)
	}
	e.b.Kill()
	cmd := exec.Command(e.agent, "exec", "--", "sh", "-c", "kubectl get configmaps -n "+e.appNS+" && exec sleep 60")
	cmd.Env = append(os.Environ(), j.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var spool string
	deadline := time.Now().Add(30 * time.Second)
	for spool == "" {
		for _, s := range j.spools(t) {
			data, _ := os.ReadFile(s)
			if strings.Contains(string(data), `"type":"request"`) && strings.Contains(string(data), "configmaps") {
				spool = s
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the spool")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the wrapper and its child
	_ = cmd.Wait()
	n := lines(t, spool)
	if n < 3 {
		t.Fatalf("spool has %d lines", n)
	}
	e.b.Restart(t)
	// The run's next command pushes the leftover (in the background, waited for at its end).
	if _, errOut, code := e.exec(t, j, nil, "--", "true"); code != 0 {
		t.Fatalf("next exec: %s", errOut)
	}
	var killed map[string]any
	for _, ti := range e.list(t, "--run", j.runID) {
		if int(ti["lines"].(float64)) == n && ti["sealed"] != true {
			killed = ti
		}
	}
	if killed == nil {
		t.Fatalf("the killed run's %d spooled lines are not at the broker unsealed: %v", n, e.list(t, "--run", j.runID))
	}
	if _, err := os.Stat(spool); err != nil {
		t.Errorf("the unsealed spool was removed: %v", err)
	}
}

// --require-recording with the broker down: once the outage passes the
// bound, requests are refused.
func TestRequireRecordingBrokerDown(t *testing.T) {
	e := setup(t)
	j := newJob(t, e.c, e.iss, e.b)
	if _, errOut, code := e.exec(t, j, nil, "--", "true"); code != 0 {
		t.Fatalf("first exec: %s", errOut)
	}
	e.b.Kill()
	script := "kubectl get configmaps -n " + e.appNS + "; sleep 3; kubectl get configmaps -n " + e.appNS
	out, errOut, _ := e.exec(t, j, []string{"KUBECTL_AGENT_RECORDING_OUTAGE_LIMIT=1s"}, "--require-recording", "--", "sh", "-c", script)
	if strings.Count(out, "app-config") > 1 {
		t.Fatalf("a request went through after the outage bound:\n%s\n%s", out, errOut)
	}
	if !strings.Contains(errOut, "Error from server") && !strings.Contains(errOut, "refus") {
		t.Fatalf("no refusal:\n%s\n%s", out, errOut)
	}
}
