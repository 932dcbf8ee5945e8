// Command demo plays a pipeline run through kubectl-agent on a local control
// plane: `make demo`. It starts the pinned control plane (etcd, kube-apiserver
// with RBAC, kwok), the OIDC issuer stand-in, agent-broker on SQLite and a
// reviewer, then runs a GitHub-Actions-shaped job through `kubectl agent exec`
// and verifies its transcripts. Each step prints one line saying what happens
// and why, shows the commands' own output indented, and checks that the
// outcome is the one claimed: the demo exits non-zero when any step does not
// behave as it says.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	binFlag := flag.String("bin", "bin", "folder holding kubectl-agent and agent-broker (make build puts them in ./bin)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin, err := filepath.Abs(*binFlag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
	for _, b := range []string{"kubectl-agent", "agent-broker"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %s is missing: run `make demo` (it runs `make build` first) from the repository root, or pass --bin DIR\n", filepath.Join(bin, b))
			os.Exit(2)
		}
	}
	err = run(ctx, Options{BinDir: bin, Out: os.Stdout})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "demo interrupted; everything it started is stopped and removed")
		os.Exit(130)
	default:
		var se *stepError
		if errors.As(err, &se) {
			fmt.Fprintf(os.Stderr, "demo failed at step %q (see above): it did not behave as the demo claims\n", se.step)
		} else {
			fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		}
		os.Exit(1)
	}
}
