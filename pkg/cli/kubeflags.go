package cli

import (
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeFlags are kubectl's usual kubeconfig flags (--kubeconfig, --context,
// -n, --server, --token, --as, ...), bound with client-go's clientcmd.
//
// Why not cli-runtime's genericclioptions.ConfigFlags: that package pulls in
// the resource builder and with it client-go's full typed scheme, whose
// package initialization alone costs ~35 MiB and several milliseconds at the
// start of every process, and kubectl runs `kubectl-agent credential` before
// each of its own calls. The flags and their meaning are the same.
type KubeFlags struct {
	KubeConfig *string
	Context    *string
	Namespace  *string

	loadingRules *clientcmd.ClientConfigLoadingRules
	overrides    *clientcmd.ConfigOverrides
}

// NewKubeFlags returns unbound flags; AddFlags binds them.
func NewKubeFlags() *KubeFlags {
	f := &KubeFlags{
		loadingRules: clientcmd.NewDefaultClientConfigLoadingRules(),
		overrides:    &clientcmd.ConfigOverrides{},
	}
	f.KubeConfig = &f.loadingRules.ExplicitPath
	f.Context = &f.overrides.CurrentContext
	f.Namespace = &f.overrides.Context.Namespace
	return f
}

// AddFlags binds the flags. --cluster is left out: DESIGN.md gives it to the
// broker's cluster name.
func (f *KubeFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.loadingRules.ExplicitPath, "kubeconfig", "", "path to the kubeconfig file to use")
	names := clientcmd.RecommendedConfigOverrideFlags("")
	names.ContextOverrideFlags.ClusterName.LongName = ""
	clientcmd.BindOverrideFlags(f.overrides, fs, names)
}

// ToRawKubeConfigLoader is the kubeconfig as the flags select it.
func (f *KubeFlags) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(f.loadingRules, f.overrides)
}

// ToRESTConfig is the client config of the selected context.
func (f *KubeFlags) ToRESTConfig() (*rest.Config, error) {
	return f.ToRawKubeConfigLoader().ClientConfig()
}
