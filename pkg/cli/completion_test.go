package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// The committed completion scripts must match what the binary generates.
func TestCommittedCompletionsAreCurrent(t *testing.T) {
	for shell, file := range map[string]string{
		"bash": "kubectl-agent.bash", "zsh": "kubectl-agent.zsh",
		"fish": "kubectl-agent.fish", "powershell": "kubectl-agent.ps1",
	} {
		var out bytes.Buffer
		streams := genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &out}
		if code := Execute(t.Context(), streams, []string{"completion", shell}); code != 0 {
			t.Fatalf("completion %s exited %d: %s", shell, code, out.String())
		}
		want, err := os.ReadFile(filepath.Join("..", "..", "completions", file))
		if err != nil {
			t.Fatalf("reading committed completions: %v (run make completions)", err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("completions/%s is stale: run make completions and commit the result", file)
		}
	}
}

func TestExitCodes(t *testing.T) {
	var out bytes.Buffer
	streams := genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &out}
	if code := Execute(t.Context(), streams, []string{"no-such-command"}); code != ExitUsage {
		t.Errorf("unknown command: exit %d, want %d", code, ExitUsage)
	}
	if code := Execute(t.Context(), streams, []string{"version", "--no-such-flag"}); code != ExitUsage {
		t.Errorf("unknown flag: exit %d, want %d", code, ExitUsage)
	}
	if code := Execute(t.Context(), streams, []string{"version", "-o", "xml"}); code != ExitUsage {
		t.Errorf("bad output format: exit %d, want %d", code, ExitUsage)
	}
	out.Reset()
	if code := Execute(t.Context(), streams, []string{"version", "-o", "json"}); code != 0 || !bytes.Contains(out.Bytes(), []byte(`"version"`)) {
		t.Errorf("version -o json: exit %d, output %s", code, out.String())
	}
}
