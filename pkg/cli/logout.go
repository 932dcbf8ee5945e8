package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-agent/kubectl-agent/pkg/credential"
)

// LogoutOptions ends the run's session.
type LogoutOptions struct {
	Global *GlobalOptions
	genericiooptions.IOStreams
	Getenv func(string) string

	settings sessionSettings
}

// NewLogoutCommand is `kubectl agent logout`.
func NewLogoutCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	o := &LogoutOptions{Global: g, IOStreams: streams, Getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "End the run's session at the broker and clear it from the cache",
		Long: `End the pipeline run's session: the broker revokes its cluster credentials (the per-run
ServiceAccount is deleted) and the local cache entry is removed. Run it as the last step of a job.
Ending a session that is already gone is not an error.`,
		Example: `  kubectl agent logout --broker https://broker.example.com --cluster prod`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Complete()
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	return cmd
}

// Complete resolves the settings.
func (o *LogoutOptions) Complete() {
	o.settings = resolveSessionSettings(o.Global, o.Getenv, credential.Config{})
}

// Validate checks the settings.
func (o *LogoutOptions) Validate() error { return o.settings.validate("kubectl agent logout") }

// Run ends the session.
func (o *LogoutOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	m, err := newSessionManager(o.settings, o.Getenv)
	if err != nil {
		return err
	}
	e, err := m.End(ctx)
	if err != nil {
		return err
	}
	if e == nil {
		_, err = fmt.Fprintln(o.Out, "No session to end.")
		return err
	}
	_, err = fmt.Fprintf(o.Out, "Ended session %s on cluster %s.\n", e.Session.ID, e.Session.Cluster)
	return err
}
