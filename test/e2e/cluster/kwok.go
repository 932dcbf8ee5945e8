package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// startKwok runs kwok against the apiserver with a config that makes every
// Pod's exec run as a local process, logs and attach read a file, and
// port-forward reach a loopback HTTP server; then creates the fake node.
func (c *Cluster) startKwok(ctx context.Context) error {
	if _, err := writeServingCert(c.Dir, "kwok"); err != nil {
		return err
	}
	// What port-forward reaches.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c.PortForwardTarget = l.Addr().(*net.TCPAddr).Port
	c.pfServer = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from kwok")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = c.pfServer.Serve(l) }()

	c.LogLines = []string{"kwok pod log line 1", "kwok pod log line 2", "kwok pod log line 3"}
	logsFile := filepath.Join(c.Dir, "pod.log")
	// kwok reads logs in the CRI format: "<RFC3339Nano> <stream> <F|P> <line>".
	var cri strings.Builder
	for _, line := range c.LogLines {
		fmt.Fprintf(&cri, "%s stdout F %s\n", time.Now().UTC().Format(time.RFC3339Nano), line)
	}
	if err := os.WriteFile(logsFile, []byte(cri.String()), 0o644); err != nil {
		return err
	}
	workDir := filepath.Join(c.Dir, "exec")
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: local-exec
spec:
  execs:
  - local:
      workDir: %[1]s
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: file-logs
spec:
  logs:
  - logsFile: %[2]s
    follow: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterAttach
metadata:
  name: file-attach
spec:
  attaches:
  - logsFile: %[2]s
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata:
  name: loopback-forward
spec:
  forwards:
  - target:
      port: %[3]d
      address: 127.0.0.1
`, workDir, logsFile, c.PortForwardTarget)
	configFile := filepath.Join(c.Dir, "kwok.yaml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := c.start(ctx, "kwok",
		"--kubeconfig="+c.AdminKubeconfig, "-c", configFile,
		"--manage-all-nodes", "--node-ip=127.0.0.1", fmt.Sprintf("--node-port=%d", port),
		"--server-address="+addr,
		"--tls-cert-file="+filepath.Join(c.Dir, "kwok.crt"), "--tls-private-key-file="+filepath.Join(c.Dir, "kwok.key"),
	); err != nil {
		return err
	}
	cs := c.Clientset()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        NodeName,
		Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": NodeName},
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
	}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the kwok node: %w", err)
	}
	return waitFor(ctx, 60*time.Second, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s is not Ready yet", NodeName)
	}, func() string { return c.logTail("kwok") })
}
