// Command soak is kubectl-agent's load and fault suite (`make soak`): many
// concurrent pipelines against two agent-broker processes on one PostgreSQL
// and a local control plane, with one broker killed (SIGKILL) and restarted
// and PostgreSQL restarted in the middle. Everything listens on loopback.
//
// Each pipeline is one CI run with its own GitHub-shaped OIDC token (its own
// run id): token exchange, kubectl work through the proxy, a transcript
// streamed to the brokers, and the end of the session. Most pipelines run in
// this process (pkg/session, pkg/proxy, pkg/transcript: the code
// `kubectl agent exec` runs) so that 200 of them fit on two cores; a share
// runs the real `kubectl agent exec -- sh -c 'kubectl ...'` binary.
//
// At the end it prints what was sent and what the store holds, and checks
// that no session was lost or duplicated, that every transcript is stored
// exactly once (the stored lines equal the client's spool byte for byte),
// and that no JIT ServiceAccount (or Role, RoleBinding) outlived its session
// once the brokers reconciled. It exits 1 on any loss or failed pipeline.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Config is the soak's shape.
type Config struct {
	Pipelines  int           // concurrent pipelines (workers)
	Binary     int           // of them, how many run the real kubectl-agent binary
	Duration   time.Duration // how long new pipelines start
	Grace      time.Duration // how long running pipelines may take to finish after that
	BrokerDown time.Duration // how long the killed broker stays down
	Reconcile  time.Duration // the brokers' reconcile interval
	LeakWait   time.Duration // how long to wait for reconcile to remove leftover ServiceAccounts
	BinDir     string        // kubectl-agent and agent-broker; built when missing
	KeepLogs   bool
	NoFaults   bool
}

func defaultConfig() Config {
	return Config{
		Pipelines: 200, Binary: 10, Duration: 5 * time.Minute, Grace: 3 * time.Minute,
		BrokerDown: 3 * time.Second, Reconcile: 5 * time.Second, LeakWait: 90 * time.Second, BinDir: "bin",
	}
}

func main() {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	fs.IntVar(&cfg.Pipelines, "pipelines", cfg.Pipelines, "concurrent pipelines")
	fs.IntVar(&cfg.Binary, "binary", cfg.Binary, "how many of the concurrent pipelines run the real `kubectl agent exec` binary")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long new pipelines start (the whole soak takes this plus setup and checks)")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "how long running pipelines may take to finish after -duration")
	fs.DurationVar(&cfg.BrokerDown, "broker-down", cfg.BrokerDown, "how long the killed broker stays down")
	fs.DurationVar(&cfg.Reconcile, "reconcile", cfg.Reconcile, "the brokers' reconcile interval")
	fs.DurationVar(&cfg.LeakWait, "leak-wait", cfg.LeakWait, "how long to wait for the brokers to remove leftover ServiceAccounts")
	fs.StringVar(&cfg.BinDir, "bin-dir", cfg.BinDir, "folder with kubectl-agent and agent-broker (make build); built into a temporary folder when missing")
	fs.BoolVar(&cfg.KeepLogs, "keep-logs", false, "keep the broker logs and transcripts (the folder is printed)")
	fs.BoolVar(&cfg.NoFaults, "no-faults", false, "skip the broker kill and the PostgreSQL restart")
	_ = fs.Parse(os.Args[1:])
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak failed: %v\n", err)
		os.Exit(1)
	}
	if !rep.ok() {
		fmt.Fprintln(os.Stderr, "soak failed: see the losses above")
		os.Exit(1)
	}
}

func (c Config) validate() error {
	switch {
	case c.Pipelines < 1:
		return fmt.Errorf("-pipelines must be at least 1")
	case c.Binary < 0 || c.Binary > c.Pipelines:
		return fmt.Errorf("-binary must be between 0 and -pipelines (%d)", c.Pipelines)
	case c.Duration <= 0:
		return fmt.Errorf("-duration must be positive, e.g. 5m")
	case c.Reconcile < time.Second:
		return fmt.Errorf("-reconcile must be at least 1s")
	}
	return nil
}

// logger prints timestamped progress lines.
type logger struct {
	out   io.Writer
	start time.Time
}

func (l *logger) printf(format string, args ...any) {
	fmt.Fprintf(l.out, "[%6.1fs] %s\n", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
}
