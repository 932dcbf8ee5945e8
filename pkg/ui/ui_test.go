package ui

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Without a terminal (a buffer here) nothing styled may carry escape codes.
func TestPlainWithoutATerminal(t *testing.T) {
	var b bytes.Buffer
	u := NewWithEnv(&b, env(nil))
	u.Step("step %d", 1)
	u.Fail("denied %s", "x")
	b.WriteString(u.Bold("bold") + u.Dim("dim") + u.Renderer().NewStyle().Bold(true).Render("r"))
	if strings.Contains(b.String(), "\x1b") {
		t.Fatalf("escape codes in plain output: %q", b.String())
	}
	if !strings.Contains(b.String(), "▸ step 1\n✗ denied x\n") {
		t.Fatalf("output %q", b.String())
	}
}

func TestGitHubAnnotationsAndSummary(t *testing.T) {
	var b bytes.Buffer
	summary := t.TempDir() + "/summary.md"
	u := NewWithEnv(&b, env(map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": summary}))
	u.Annotate("error", "a: title, with", "line1\nline2 100%")
	if got := b.String(); got != "::error title=a%3A title%2C with::line1%0Aline2 100%25\n" {
		t.Fatalf("annotation %q", got)
	}
	if err := u.StepSummary("| a |\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(summary)
	if string(got) != "| a |\n" {
		t.Fatalf("summary %q", got)
	}
	// Outside GitHub Actions: nothing.
	b.Reset()
	NewWithEnv(&b, env(nil)).Annotate("error", "t", "m")
	if b.Len() != 0 {
		t.Fatalf("annotation outside GitHub: %q", b.String())
	}
}
