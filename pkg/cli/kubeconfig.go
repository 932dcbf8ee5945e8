package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubectl-agent/kubectl-agent/pkg/credential"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
)

// installHint is what kubectl prints when the plugin binary is missing.
const installHint = `kubectl-agent is not on PATH. Install it with
  kubectl krew install agent
or
  go install github.com/kubectl-agent/kubectl-agent/cmd/kubectl-agent@latest`

// KubeconfigOptions writes a kubeconfig entry that uses the credential
// plugin.
type KubeconfigOptions struct {
	Global *GlobalOptions
	genericiooptions.IOStreams
	Getenv func(string) string

	// Name of the cluster, user and context entries; default agent-<cluster>.
	Name string
	// Command is the exec plugin command (default kubectl-agent).
	Command string
	// APIVersion is the ExecCredential version kubectl asks for.
	APIVersion string
	// SetCurrent makes the new context current.
	SetCurrent bool

	settings sessionSettings
	path     string
}

// NewKubeconfigCommand is `kubectl agent kubeconfig`.
func NewKubeconfigCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	o := &KubeconfigOptions{Global: g, IOStreams: streams, Getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Write a kubeconfig context that gets its credentials from kubectl agent credential",
		Long: `Fetch the cluster's address and CA from the broker and write (or merge) a cluster, a user and
a context into the kubeconfig file. The user runs 'kubectl-agent credential' as an exec credential
plugin, so every kubectl call of the pipeline run uses the run's own short-lived credential.
The broker and cluster name are kept in the cluster's client.authentication.k8s.io/exec extension.
The file is written with mode 0600.`,
		Example: `  # Add a context for the broker's cluster "prod" to ~/.kube/config (or $KUBECONFIG) and use it
  kubectl agent kubeconfig --broker https://broker.example.com --cluster prod

  # Write a separate file for the job
  kubectl agent kubeconfig --broker https://broker.example.com --cluster prod --kubeconfig "$RUNNER_TEMP/kubeconfig"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "", "name of the kubeconfig cluster, user and context (default agent-<cluster>)")
	f.StringVar(&o.Command, "exec-command", "kubectl-agent", "command kubectl runs for credentials (a name on PATH or an absolute path)")
	f.StringVar(&o.APIVersion, "exec-api-version", credential.V1, "ExecCredential apiVersion kubectl asks for: "+credential.V1+" or "+credential.V1beta1)
	f.BoolVar(&o.SetCurrent, "set-current", true, "make the new context the current context")
	return cmd
}

// Complete resolves settings and the target file.
func (o *KubeconfigOptions) Complete() error {
	o.settings = resolveSessionSettings(o.Global, o.Getenv, credential.Config{})
	if o.Name == "" {
		o.Name = "agent-" + o.settings.Cluster
	}
	if o.Global.ConfigFlags != nil && o.Global.ConfigFlags.KubeConfig != nil && *o.Global.ConfigFlags.KubeConfig != "" {
		o.path = *o.Global.ConfigFlags.KubeConfig
	} else {
		o.path = clientcmd.NewDefaultClientConfigLoadingRules().GetDefaultFilename()
	}
	return nil
}

// Validate checks the flags.
func (o *KubeconfigOptions) Validate() error {
	if err := o.settings.validate("kubectl agent kubeconfig"); err != nil {
		return err
	}
	if o.APIVersion != credential.V1 && o.APIVersion != credential.V1beta1 {
		return UsageError("--exec-api-version %q is not supported: use %s or %s", o.APIVersion, credential.V1, credential.V1beta1)
	}
	if o.Command == "" {
		return UsageError("--exec-command is empty: give kubectl-agent or its absolute path")
	}
	return nil
}

// Run fetches the cluster from the broker and writes the kubeconfig.
func (o *KubeconfigOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	client, err := session.NewClient(o.settings.Broker)
	if err != nil {
		return UsageError("%v", err)
	}
	list, err := client.Clusters(ctx)
	if err != nil {
		return err
	}
	var found *clientcmdapi.Cluster
	var names []string
	for _, c := range list.Clusters {
		names = append(names, c.Name)
		if c.Name == o.settings.Cluster {
			found = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.CAData}
		}
	}
	if found == nil {
		return UsageError("the broker has no cluster %q; it has: %s", o.settings.Cluster, strings.Join(names, ", "))
	}
	ext := credential.Config{Broker: o.settings.Broker, Cluster: o.settings.Cluster}
	if o.settings.Audience != o.settings.Broker {
		ext.Audience = o.settings.Audience
	}
	if o.Global.TokenSource != "" {
		ext.TokenSource = o.Global.TokenSource
	}
	raw, err := json.Marshal(ext)
	if err != nil {
		return err
	}
	found.Extensions = map[string]runtime.Object{credential.ExtensionName: &runtime.Unknown{Raw: raw, ContentType: runtime.ContentTypeJSON}}

	cfg, err := clientcmd.LoadFromFile(o.path)
	if errors.Is(err, fs.ErrNotExist) {
		cfg = clientcmdapi.NewConfig()
	} else if err != nil {
		return fmt.Errorf("reading the kubeconfig %s: %w", o.path, err)
	}
	cfg.Clusters[o.Name] = found
	cfg.AuthInfos[o.Name] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
		Command:            o.Command,
		Args:               []string{"credential"},
		APIVersion:         o.APIVersion,
		InstallHint:        installHint,
		ProvideClusterInfo: true,
		InteractiveMode:    clientcmdapi.NeverExecInteractiveMode,
	}}
	kctx := &clientcmdapi.Context{Cluster: o.Name, AuthInfo: o.Name}
	if o.Global.ConfigFlags != nil && o.Global.ConfigFlags.Namespace != nil {
		kctx.Namespace = *o.Global.ConfigFlags.Namespace
	}
	cfg.Contexts[o.Name] = kctx
	if o.SetCurrent {
		cfg.CurrentContext = o.Name
	}
	if err := os.MkdirAll(filepath.Dir(o.path), 0o700); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	if err := clientcmd.WriteToFile(*cfg, o.path); err != nil {
		return fmt.Errorf("writing the kubeconfig %s: %w", o.path, err)
	}
	// WriteToFile keeps an existing file's mode; a kubeconfig is private.
	if err := os.Chmod(o.path, 0o600); err != nil {
		return fmt.Errorf("making the kubeconfig %s private: %w", o.path, err)
	}
	_, err = fmt.Fprintf(o.Out, "Wrote context %q (cluster %s at %s, broker %s) to %s\n", o.Name, o.settings.Cluster, found.Server, o.settings.Broker, o.path)
	return err
}
