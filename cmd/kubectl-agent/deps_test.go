package main

import (
	"os/exec"
	"strings"
	"testing"
)

// kubectl runs `kubectl-agent credential` before every call, and Go runs
// every imported package's init before main, so this binary must not import
// packages whose init is heavy. Measured on the 2-core CI machine: with
// client-go's kubernetes/scheme (pulled in by cli-runtime's genericclioptions
// or a typed clientset) a cache hit took 15.6 ms and 57 MiB; without it,
// ~24 MiB.
func TestNoHeavyInitImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"k8s.io/client-go/kubernetes/scheme",
		"k8s.io/client-go/kubernetes",
		"k8s.io/cli-runtime/pkg/genericclioptions",
		"k8s.io/cli-runtime/pkg/resource",
		"k8s.io/kubectl/pkg/scheme",
		"modernc.org/sqlite",
	}
	deps := map[string]bool{}
	for _, d := range strings.Fields(string(out)) {
		deps[d] = true
	}
	for _, f := range forbidden {
		if deps[f] {
			why, _ := exec.Command("go", "list", "-f", `{{.ImportPath}}: {{join .Imports " "}}`, "-deps", ".").Output()
			var importers []string
			for _, line := range strings.Split(string(why), "\n") {
				if strings.Contains(" "+line+" ", " "+f+" ") && !strings.HasPrefix(line, f+":") {
					importers = append(importers, strings.SplitN(line, ":", 2)[0])
				}
			}
			t.Errorf("kubectl-agent imports %s (via %v): its init runs at every credential call; keep it out", f, importers)
		}
	}
}
