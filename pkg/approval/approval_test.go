package approval

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestUnifiedDiff(t *testing.T) {
	a := "a: 1\nb: 2\nc: 3\n"
	b := "a: 1\nb: 5\nc: 3\nd: 4\n"
	got := UnifiedDiff("live", "after", a, b)
	for _, want := range []string{"--- live\n+++ after\n", "-b: 2\n", "+b: 5\n", "+d: 4\n", " a: 1\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "-b: 2") > strings.Index(got, "+b: 5") {
		t.Errorf("removals come before additions:\n%s", got)
	}
	if UnifiedDiff("x", "y", a, a) != "" {
		t.Error("equal texts must give an empty diff")
	}
}

// A delete's dry run must carry dryRun in the body: with a body the
// apiserver ignores the query, and the real object would go.
func TestDryRunDeleteBody(t *testing.T) {
	for _, in := range []string{"", `{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background"}`, "propagationPolicy: Orphan\n", `{"dryRun":[]}`} {
		out, ok := dryRunDeleteBody([]byte(in))
		if !ok {
			t.Fatalf("%q: refused", in)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		if d, _ := m["dryRun"].([]any); len(d) != 1 || d[0] != "All" {
			t.Errorf("%q: dryRun = %v", in, m["dryRun"])
		}
	}
	if _, ok := dryRunDeleteBody([]byte("[1,2]")); ok {
		t.Error("a body that is not an object must not be sent as a dry run")
	}
}

func TestBodyDigest(t *testing.T) {
	if got := BodyDigest(nil); got != "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("empty digest %s", got)
	}
	if BodyDigest([]byte("a")) == BodyDigest([]byte("b")) {
		t.Error("different bodies, same digest")
	}
}

func FuzzDryRunDeleteBody(f *testing.F) {
	for _, s := range []string{"", "{}", `{"dryRun":"x"}`, "a: b", "null", "[]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := dryRunDeleteBody([]byte(in))
		if !ok {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("output is not JSON: %v", err)
		}
		if d, _ := m["dryRun"].([]any); len(d) != 1 || d[0] != "All" {
			t.Fatalf("%q: dryRun = %v", in, m["dryRun"])
		}
	})
}
