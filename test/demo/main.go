// Command demo plays a pipeline run through kubectl-agent on a local control
// plane: `make demo`. Each step prints one line saying what happens and why.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
	"github.com/kubectl-agent/kubectl-agent/test/e2e/cluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, ui.New(os.Stdout)); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

// demo holds what the steps share.
type demo struct {
	u       *ui.UI
	c       *cluster.Cluster
	binDir  string // kubectl-agent, agent-broker (from make build)
	workDir string
	env     []string
}

func run(ctx context.Context, u *ui.UI) error {
	start := time.Now()
	u.Step("starting a local control plane: etcd, kube-apiserver (RBAC on) and kwok, which runs Pods as local processes")
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return err
	}
	defer c.Stop()
	u.OK("kube-apiserver %s is ready at %s (%s)", c.Version, c.Server, time.Since(start).Round(time.Millisecond))

	root, err := os.Getwd()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "ka-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	d := &demo{u: u, c: c, binDir: filepath.Join(root, "bin"), workDir: work}
	d.env = append(os.Environ(),
		"KUBECONFIG="+c.AdminKubeconfig,
		"PATH="+d.binDir+string(os.PathListSeparator)+c.BinDir()+string(os.PathListSeparator)+os.Getenv("PATH"),
	)

	u.Step("the platform team's view: kubectl with the admin kubeconfig")
	if err := d.show(ctx, "kubectl", "get", "nodes", "-o", "wide"); err != nil {
		return err
	}
	u.OK("demo finished in %s; everything it started is stopped and removed", time.Since(start).Round(time.Second))
	return nil
}

// show runs a command with the demo's environment and prints its output indented.
func (d *demo) show(ctx context.Context, name string, args ...string) error {
	out, err := d.run(ctx, name, args...)
	fmt.Print(indent(out))
	if err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

func (d *demo) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = d.env
	cmd.Dir = d.workDir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n") + "\n"
}
