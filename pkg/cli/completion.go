package cli

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// CompletionOptions writes a shell completion script.
type CompletionOptions struct {
	Shell string
	genericiooptions.IOStreams
}

// NewCompletionCommand is `kubectl agent completion SHELL`.
func NewCompletionCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &CompletionOptions{IOStreams: streams}
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a shell completion script for kubectl-agent.

When used as 'kubectl agent', kubectl (1.26+) completes plugin commands through the
kubectl_complete-agent helper shipped beside the binary; this command serves
'kubectl-agent' called directly.`,
		Example: `  source <(kubectl-agent completion bash)
  kubectl-agent completion zsh > "${fpath[1]}/_kubectl-agent"`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Shell = args[0]
			return o.Run(cmd.Root())
		},
	}
}

// Run writes the script for o.Shell.
func (o *CompletionOptions) Run(root *cobra.Command) error {
	switch o.Shell {
	case "bash":
		return root.GenBashCompletionV2(o.Out, true)
	case "zsh":
		return root.GenZshCompletion(o.Out)
	case "fish":
		return root.GenFishCompletion(o.Out, true)
	case "powershell":
		return root.GenPowerShellCompletionWithDesc(o.Out)
	}
	return UsageError("unknown shell %q: use bash, zsh, fish or powershell", o.Shell)
}
