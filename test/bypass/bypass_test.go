package bypass

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
)

func describe(r Result) string {
	if r.Refused != nil {
		return "refused: " + r.Refused.Error()
	}
	var b []string
	for i, q := range r.Requests {
		b = append(b, fmt.Sprintf("%s %s/%s/%s ns=%q name=%q → %s %s", q.Verb, q.APIGroup, q.Resource, q.Subresource, q.Namespace, q.Name, r.Decisions[i].Action, r.Decisions[i].Rule))
	}
	return strings.Join(b, "\n\t")
}

func TestCorpus(t *testing.T) {
	c, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Deny) < 40 || len(c.Allow) < 20 {
		t.Fatalf("corpus has %d deny and %d allow cases, want >= 40 and >= 20", len(c.Deny), len(c.Allow))
	}
	ctx := context.Background()
	for _, k := range c.Deny {
		r, err := c.Decide(ctx, k)
		if err != nil {
			t.Errorf("deny case %s: %v", k, err)
			continue
		}
		if r.Action != policy.Deny {
			t.Errorf("deny case %s was %s:\n\t%s", k, r.Action, describe(r))
		}
		if r.Refused == nil && len(r.Requests) == 0 {
			t.Errorf("deny case %s mapped to no requests", k)
		}
	}
	for _, k := range c.Allow {
		r, err := c.Decide(ctx, k)
		if err != nil {
			t.Errorf("allow case %s: %v", k, err)
			continue
		}
		if r.Action != policy.Allow || len(r.Requests) == 0 {
			t.Errorf("allow case %s was %s:\n\t%s", k, r.Action, describe(r))
		}
	}
}

func TestSplitWords(t *testing.T) {
	got, err := SplitWords(`patch ns x -p '{"$patch":"delete"}' "a b" c\ d`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"patch", "ns", "x", "-p", `{"$patch":"delete"}`, "a b", "c d"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("SplitWords = %q, want %q", got, want)
	}
	if _, err := SplitWords(`x 'y`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

// TestCorpusNeedsItsPolicy: under the default (allow-all) policy the deny
// cases go through unless their path is refused, so TestCorpus's denials come
// from the corpus policy's rules and not from the mapper failing closed.
func TestCorpusNeedsItsPolicy(t *testing.T) {
	c, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	c.Policy = policy.Default()
	refused := 0
	for _, k := range c.Deny {
		r, err := c.Decide(context.Background(), k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if r.Refused != nil {
			refused++
			continue
		}
		if r.Action != policy.Allow {
			t.Errorf("%s: %s under the default policy:\n\t%s", k, r.Action, describe(r))
		}
	}
	if refused < 10 || refused > 20 {
		t.Errorf("%d deny cases refused as non-canonical paths, want the 10..20 path tricks", refused)
	}
	t.Logf("%d of %d deny cases are refused paths", refused, len(c.Deny))
}
