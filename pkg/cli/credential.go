package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-agent/kubectl-agent/pkg/credential"
	"github.com/kubectl-agent/kubectl-agent/pkg/identity"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
)

// Environment variables of the shared flags (DESIGN.md, "Contracts").
const (
	envBroker      = "KUBECTL_AGENT_BROKER"
	envCluster     = "KUBECTL_AGENT_CLUSTER"
	envTokenSource = "KUBECTL_AGENT_TOKEN_SOURCE"
	envAudience    = "KUBECTL_AGENT_AUDIENCE"
)

// sessionSettings are the broker, cluster, audience and token source of a
// session command, resolved from flag, then environment, then the kubeconfig
// cluster extension (for the credential plugin).
type sessionSettings struct {
	Broker, Cluster, Audience, TokenSource string
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func resolveSessionSettings(g *GlobalOptions, env func(string) string, ext credential.Config) sessionSettings {
	s := sessionSettings{
		Broker:      firstNonEmpty(g.Broker, env(envBroker), ext.Broker),
		Cluster:     firstNonEmpty(g.Cluster, env(envCluster), ext.Cluster),
		Audience:    firstNonEmpty(g.Audience, env(envAudience), ext.Audience),
		TokenSource: firstNonEmpty(g.TokenSource, env(envTokenSource), ext.TokenSource, "auto"),
	}
	s.Broker = strings.TrimRight(s.Broker, "/")
	// The pipeline token's default audience is the broker's URL: it names
	// the one party meant to accept the token (configure the broker's issuer
	// audiences to match, or set --audience).
	if s.Audience == "" {
		s.Audience = s.Broker
	}
	return s
}

func (s sessionSettings) validate(cmd string) error {
	var missing []string
	if s.Broker == "" {
		missing = append(missing, "--broker (or "+envBroker+")")
	}
	if s.Cluster == "" {
		missing = append(missing, "--cluster (or "+envCluster+")")
	}
	if len(missing) > 0 {
		return UsageError("%s needs %s", cmd, strings.Join(missing, " and "))
	}
	return nil
}

// newSessionManager builds the session manager for s. Building it does no
// IO beyond the cache folder; the token source is not asked yet.
func newSessionManager(s sessionSettings, env func(string) string) (*session.Manager, error) {
	src, err := identity.New(s.TokenSource, s.Audience, env)
	if err != nil {
		return nil, err
	}
	client, err := session.NewClient(s.Broker)
	if err != nil {
		return nil, UsageError("%v", err)
	}
	dir, err := session.DefaultCacheDir(env)
	if err != nil {
		return nil, err
	}
	cache, err := session.OpenCache(dir)
	if err != nil {
		return nil, err
	}
	return &session.Manager{Broker: s.Broker, Cluster: s.Cluster, Audience: s.Audience, Source: src, Client: client, Cache: cache, Env: env}, nil
}

// CredentialOptions prints an ExecCredential for kubectl.
type CredentialOptions struct {
	Global *GlobalOptions
	genericiooptions.IOStreams
	// Getenv reads the environment; tests replace it.
	Getenv func(string) string

	info     *credential.ExecInfo
	settings sessionSettings
}

// NewCredentialCommand is `kubectl agent credential`, the exec credential
// plugin.
func NewCredentialCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CredentialOptions{Global: g, IOStreams: streams, Getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "credential",
		Short: "Print the run's cluster credential as an ExecCredential (kubectl exec credential plugin)",
		Long: `Print a client.authentication.k8s.io ExecCredential with the run's cluster credential.

kubectl runs this as an exec credential plugin (see 'kubectl agent kubeconfig'). The first call of a
pipeline run exchanges the run's OIDC token at the broker for a session; later calls of the same run
are answered from the session cache (0600 files under $KUBECACHEDIR/kubectl-agent, or a per-job
temporary folder in CI) without any network call, until the credential nears its expiry.
It never prompts. The broker, cluster and audience come from the flags, then the KUBECTL_AGENT_*
environment variables, then the kubeconfig cluster extension client.authentication.k8s.io/exec.`,
		Example: `  # In a kubeconfig user (written for you by 'kubectl agent kubeconfig'):
  #   exec:
  #     apiVersion: client.authentication.k8s.io/v1
  #     command: kubectl-agent
  #     args: [credential]
  #     interactiveMode: Never
  #     provideClusterInfo: true

  # By hand, in a GitHub Actions job with id-token: write
  kubectl agent credential --broker https://broker.example.com --cluster prod`,
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
	return cmd
}

// Complete reads KUBERNETES_EXEC_INFO and resolves the settings.
func (o *CredentialOptions) Complete() error {
	info, err := credential.ReadExecInfo(o.Getenv(credential.ExecInfoEnv))
	if err != nil {
		return err
	}
	o.info = info
	o.settings = resolveSessionSettings(o.Global, o.Getenv, info.Config)
	return nil
}

// Validate fails at once, saying what to set, when broker or cluster is
// unknown.
func (o *CredentialOptions) Validate() error { return o.settings.validate("kubectl agent credential") }

// Run prints the ExecCredential.
func (o *CredentialOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	m, err := newSessionManager(o.settings, o.Getenv)
	if err != nil {
		return err
	}
	c, _, err := m.Credential(ctx)
	if err != nil {
		return err
	}
	out, err := credential.Render(o.info.APIVersion, c.Token, c.ExpiresAt, time.Now())
	if err != nil {
		return err
	}
	if _, err := o.Out.Write(out); err != nil {
		return fmt.Errorf("writing the ExecCredential: %w", err)
	}
	return nil
}
