// Package plugin_test checks kubectl-agent the way kubectl users meet it: as a
// plugin found on PATH by the real kubectl, with completion through the
// kubectl_complete-agent helper.
package plugin_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

// pluginPath builds kubectl-agent into a folder with the completion helper and
// returns a PATH that finds them first.
func pluginPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-agent"), "github.com/kubectl-agent/kubectl-agent/cmd/kubectl-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-agent: %v\n%s", err, out)
	}
	helper, err := os.ReadFile("../../../plugin/kubectl_complete-agent")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kubectl_complete-agent"), helper, 0o755); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")
}

func TestKubectlFindsThePlugin(t *testing.T) {
	c := cluster.Shared(t)
	path := pluginPath(t)

	out, errOut, code := c.Kubectl(t, []string{path}, "agent", "version", "-o", "json")
	if code != 0 || !strings.Contains(out, `"version"`) {
		t.Fatalf("kubectl agent version: code %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = c.Kubectl(t, []string{path}, "agent", "--help")
	if code != 0 || !strings.Contains(out, "kubectl agent [command]") {
		t.Fatalf("kubectl agent --help should read as 'kubectl agent': code %d\n%s%s", code, out, errOut)
	}
	out, _, _ = c.Kubectl(t, []string{path}, "plugin", "list")
	if !strings.Contains(out, "kubectl-agent") {
		t.Fatalf("kubectl plugin list does not show kubectl-agent:\n%s", out)
	}
}

func TestKubectlCompletesThroughTheHelper(t *testing.T) {
	c := cluster.Shared(t)
	path := pluginPath(t)
	// What the shell's kubectl completion asks: kubectl __complete agent <partial>.
	out, errOut, code := c.Kubectl(t, []string{path}, "__complete", "agent", "ver")
	if code != 0 || !strings.Contains(out, "version") {
		t.Fatalf("kubectl __complete agent ver: code %d\n%s%s", code, out, errOut)
	}
	out, _, _ = c.Kubectl(t, []string{path}, "__complete", "agent", "completion", "")
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if !strings.Contains(out, sh) {
			t.Fatalf("completion of 'kubectl agent completion' lacks %s:\n%s", sh, out)
		}
	}
}
