// Package examples applies the Kubernetes manifests in examples/ to the real
// apiserver, so the deployment a platform team copies is accepted as written.
package examples

import (
	"os"
	"strings"
	"testing"

	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

func TestBrokerManifestsApply(t *testing.T) {
	c := cluster.Shared(t)
	// The RBAC file holds the namespace; create it for real so the
	// namespaced objects can be dry-run into it.
	out, errOut, code := c.Kubectl(t, nil, "apply", "-f", "../../../examples/broker-rbac.yaml")
	if code != 0 {
		t.Fatalf("applying examples/broker-rbac.yaml: %s%s", out, errOut)
	}
	out, errOut, code = c.Kubectl(t, nil, "apply", "--dry-run=server", "-f", "../../../examples/deploy/broker.yaml")
	if code != 0 {
		t.Fatalf("examples/deploy/broker.yaml is refused by the apiserver: %s%s", out, errOut)
	}
	for _, want := range []string{"configmap/agent-broker-config", "deployment.apps/agent-broker", "service/agent-broker", "poddisruptionbudget.policy/agent-broker"} {
		if !strings.Contains(out, want) {
			t.Errorf("server dry-run did not accept %s:\n%s", want, out)
		}
	}
	// Two replicas, as the docs promise for a PostgreSQL-backed broker.
	out, _, _ = c.Kubectl(t, nil, "apply", "--dry-run=server", "-f", "../../../examples/deploy/broker.yaml", "-o", "jsonpath={.items[?(@.kind==\"Deployment\")].spec.replicas}")
	if strings.TrimSpace(out) != "2" {
		t.Errorf("deployment replicas = %q, want 2", out)
	}
}
