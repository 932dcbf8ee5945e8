package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-agent/kubectl-agent/pkg/buildinfo"
)

// VersionOptions prints the build's version.
type VersionOptions struct {
	Output string
	genericiooptions.IOStreams
}

// NewVersionCommand is `kubectl agent version`.
func NewVersionCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &VersionOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of kubectl-agent",
		Example: `  kubectl agent version
  kubectl agent version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	return cmd
}

// Validate checks the output format.
func (o *VersionOptions) Validate() error { return validateOutput(o.Output, "json", "yaml") }

// Run prints the version.
func (o *VersionOptions) Run() error { return printVersion(o.Out, o.Output, "kubectl-agent") }

func printVersion(w io.Writer, output, name string) error {
	info := buildinfo.Get()
	if done, err := printData(w, output, info); done {
		return err
	}
	_, err := fmt.Fprintf(w, "%s %s (commit %s, built %s, %s)\n", name, info.Version, orUnknown(info.Commit), orUnknown(info.Date), info.GoVersion)
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
