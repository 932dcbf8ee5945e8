package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// shared is the package's control plane, set by Main. A test package is one
// process, so a package variable is the natural place for TestMain's state.
var shared *Cluster

// Main starts one control plane, runs the package's tests, and stops it, also
// on SIGINT/SIGTERM. Use it as: func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }.
func Main(m *testing.M) int { return MainWith(m, Options{}) }

// MainWith is Main with options (extra apiserver flags, say).
func MainWith(m *testing.M, opts Options) int {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	start := time.Now()
	c, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: cannot start the local control plane: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cluster: kube-apiserver %s at %s ready in %s (kwok node %s)\n", c.Version, c.Server, time.Since(start).Round(time.Millisecond), NodeName)
	shared = c
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			c.Stop()
			os.Exit(130)
		}
	}()
	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	c.Stop()
	return code
}

// Shared returns the package's control plane; the package's TestMain must call Main.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if shared == nil {
		t.Fatal("cluster.Shared: this package's TestMain must call cluster.Main(m)")
	}
	t.Logf("control plane: kube-apiserver %s at %s", shared.Version, shared.Server)
	return shared
}

// Namespace creates a fresh namespace with its default ServiceAccount and
// deletes it when the test ends.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	cs := c.Clientset()
	base := strings.ToLower(t.Name())
	base = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, base)
	if len(base) > 40 {
		base = base[:40]
	}
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(base, "-") + "-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	if err := ensureDefaultServiceAccount(ctx, cs, ns.Name); err != nil {
		t.Fatalf("creating the default ServiceAccount: %v", err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// Kubectl runs the pinned kubectl with the admin kubeconfig (unless env sets
// KUBECONFIG) and returns its output and exit code.
func (c *Cluster) Kubectl(t testing.TB, env []string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.KubectlPath(), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.AdminKubeconfig)
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		exitCode = ee.ExitCode()
	default:
		t.Fatalf("running kubectl %v: %v", args, err)
	}
	return out.String(), errb.String(), exitCode
}

// Kubeconfig writes a kubeconfig for this cluster with the given bearer token.
func (c *Cluster) Kubeconfig(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.writeKubeconfig(path, token, "user"); err != nil {
		t.Fatal(err)
	}
	return path
}

// ServiceAccountToken creates the ServiceAccount if needed and returns a
// TokenRequest token for it.
func (c *Cluster) ServiceAccountToken(t testing.TB, ns, sa string) string {
	t.Helper()
	ctx := context.Background()
	cs := c.Clientset()
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating ServiceAccount %s/%s: %v", ns, sa, err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// RunningPod creates a Pod on the kwok node and waits until it is Running.
func (c *Cluster) RunningPod(t testing.TB, ns, name string) {
	t.Helper()
	ctx := context.Background()
	cs := c.Clientset()
	if err := ensureDefaultServiceAccount(ctx, cs, ns); err != nil {
		t.Fatalf("creating the default ServiceAccount: %v", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:    NodeName,
			Containers:  []corev1.Container{{Name: "main", Image: "busybox", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
			Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating Pod %s/%s: %v", ns, name, err)
	}
	err := waitFor(ctx, 60*time.Second, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pod %s/%s is %s", ns, name, p.Status.Phase)
		}
		return nil
	}, func() string { return c.logTail("kwok") })
	if err != nil {
		t.Fatal(err)
	}
}

// Background is a kubectl process running in the background (port-forward, watch).
type Background struct {
	cmd *exec.Cmd
	out *lockedWriter
}

// StartKubectl starts the pinned kubectl in the background; Stop ends it.
func StartKubectl(ctx context.Context, t testing.TB, c *Cluster, env []string, args ...string) *Background {
	t.Helper()
	cmd := exec.CommandContext(ctx, c.KubectlPath(), args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+c.AdminKubeconfig), env...)
	out := &lockedWriter{w: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting kubectl %v: %v", args, err)
	}
	b := &Background{cmd: cmd, out: out}
	t.Cleanup(b.Stop)
	return b
}

// Stop kills the process and waits for it.
func (b *Background) Stop() {
	if b.cmd.ProcessState == nil && b.cmd.Process != nil {
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
	}
}

// Output is what the process printed so far.
func (b *Background) Output() string {
	b.out.mu.Lock()
	defer b.out.mu.Unlock()
	return b.out.w.(*bytes.Buffer).String()
}
