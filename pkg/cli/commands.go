package cli

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// addCommands wires the commands that take the shared options. One line per
// command, so that adding a command touches only its own file and this list.
func addCommands(root *cobra.Command, g *GlobalOptions, streams genericiooptions.IOStreams) {
	root.AddCommand(NewCredentialCommand(g, streams))
	root.AddCommand(NewExecCommand(g, streams))
	root.AddCommand(NewKubeconfigCommand(g, streams))
	root.AddCommand(NewWhoamiCommand(g, streams))
	root.AddCommand(NewLogoutCommand(g, streams))
	root.AddCommand(NewCheckCommand(g, streams))
	root.AddCommand(NewApprovalsCommand(g, streams))
	root.AddCommand(NewTranscriptCommandWith(g, streams, brokerTranscriptDeps()))
}
