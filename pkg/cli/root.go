// Package cli holds kubectl-agent's cobra commands, one file per command. Each
// command follows kubectl's pattern: an Options struct with Complete, Validate
// and Run, and all IO through genericiooptions.IOStreams.
package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Exit codes of kubectl-agent (DESIGN.md, "Exit codes").
const (
	ExitOK      = 0
	ExitFailure = 1 // kubectl-agent itself failed
	ExitUsage   = 2 // bad flags or arguments
	ExitRefused = 3 // policy denied (check), or exec refused to start the child
	ExitApprove = 4 // check: the command needs approval
)

// ExitError carries a specific exit code out of a command's Run.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// UsageError marks an error as a usage error (exit code 2).
func UsageError(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// GlobalOptions are the flags every command shares.
type GlobalOptions struct {
	ConfigFlags *KubeFlags
	Broker      string
	Cluster     string
	TokenSource string
	Audience    string
}

// NewRootCommand builds `kubectl agent`.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	g := &GlobalOptions{ConfigFlags: NewKubeFlags()}
	cmd := &cobra.Command{
		Use:   "kubectl-agent",
		Short: "Per-run cluster credentials and a guarded, recorded data path for CI pipelines and AI agents",
		Long: `kubectl agent gives each pipeline run its own short-lived, narrowly scoped cluster credential
and puts a loopback proxy between the run and the cluster that enforces a deny list, holds risky
requests for human approval, masks secrets and records a signed transcript.`,
		Example: `  # Run kubectl through the guard, with a local policy
  kubectl agent exec --policy policy.yaml -- kubectl apply -f deploy.yaml

  # Ask whether a command would be allowed, without a cluster
  kubectl agent check --policy policy.yaml -- kubectl delete ns prod`,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl agent",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g.ConfigFlags.AddFlags(cmd.PersistentFlags())
	f := cmd.PersistentFlags()
	f.StringVar(&g.Broker, "broker", "", "URL of the agent-broker (env KUBECTL_AGENT_BROKER); without it, exec runs in local mode")
	f.StringVar(&g.Cluster, "cluster", "", "cluster name at the broker (env KUBECTL_AGENT_CLUSTER)")
	f.StringVar(&g.TokenSource, "token-source", "", "where the pipeline's OIDC token comes from: auto, github, gitlab[:VAR], circleci, buildkite, env:VAR, file:PATH, command:CMD (env KUBECTL_AGENT_TOKEN_SOURCE)")
	f.StringVar(&g.Audience, "audience", "", "audience to request for the pipeline token (env KUBECTL_AGENT_AUDIENCE)")

	cmd.AddCommand(
		NewVersionCommand(streams),
		NewCompletionCommand(streams),
	)
	addCommands(cmd, g, streams)
	return cmd
}

// Execute runs the root command and maps errors to exit codes.
func Execute(ctx context.Context, streams genericiooptions.IOStreams, args []string) int {
	cmd := NewRootCommand(streams)
	cmd.SetArgs(args)
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintf(streams.ErrOut, "error: %v\n", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintf(streams.ErrOut, "error: %v\n", err)
	if isUsageError(err) {
		return ExitUsage
	}
	return ExitFailure
}

// isUsageError recognizes cobra's own argument errors, which it does not type.
func isUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "requires at most", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
