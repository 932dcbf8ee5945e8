package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/jit"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
)

// BuildBackends makes each configured cluster's backend. It makes no calls to
// the clusters (readiness does), so a broker starts while a cluster is down.
func BuildBackends(ctx context.Context, cfg *config.Config) (map[string]backend.Backend, error) {
	out := map[string]backend.Backend{}
	for _, c := range cfg.Clusters {
		switch c.Backend.Type {
		case "kubernetes":
			k := c.Backend.Kubernetes
			rc, err := restConfig(k)
			if err != nil {
				return nil, fmt.Errorf("cluster %s: loading the broker's own credential: %w", c.Name, err)
			}
			// client-go's default client-side limit (5 QPS) would make a
			// burst of pipeline starts queue behind each other; the
			// apiserver's own priority and fairness protects it.
			rc.QPS, rc.Burst = 100, 200
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return nil, fmt.Errorf("cluster %s: making a client: %w", c.Name, err)
			}
			b, err := jit.New(jit.Config{Client: cs, Namespace: k.Namespace, Server: c.Server, CAData: c.CAData})
			if err != nil {
				return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
			}
			out[c.Name] = b
		case "eks":
			var ec eks.Config
			dec := json.NewDecoder(bytes.NewReader(c.Backend.EKS))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ec); err != nil {
				return nil, fmt.Errorf("cluster %s: backend.eks: %v", c.Name, err)
			}
			if ec.Server == "" {
				ec.Server = c.Server
			}
			if len(ec.CAData) == 0 {
				ec.CAData = c.CAData
			}
			b, err := eks.New(ctx, ec)
			if err != nil {
				return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
			}
			out[c.Name] = b
		default:
			return nil, fmt.Errorf("cluster %s: unknown backend type %q", c.Name, c.Backend.Type)
		}
	}
	return out, nil
}

func restConfig(k *config.KubernetesBackend) (*rest.Config, error) {
	if k.Kubeconfig == "" {
		return rest.InClusterConfig()
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: k.Kubeconfig}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context}).ClientConfig()
}
