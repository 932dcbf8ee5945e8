package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/credential"
)

// WhoAmI is `kubectl agent whoami -o json|yaml` output.
type WhoAmI struct {
	Broker   string      `json:"broker"`
	Session  api.Session `json:"session"`
	TimeLeft string      `json:"timeLeft"`
}

// WhoamiOptions shows the run's session.
type WhoamiOptions struct {
	Global *GlobalOptions
	genericiooptions.IOStreams
	Getenv func(string) string
	Output string

	settings sessionSettings
}

// NewWhoamiCommand is `kubectl agent whoami`.
func NewWhoamiCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	o := &WhoamiOptions{Global: g, IOStreams: streams, Getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show the run's session: identity, run, cluster, grant and time left",
		Long: `Show the pipeline run's session at the broker. Like any kubectl call through the credential
plugin, it starts the run's session when there is none yet.`,
		Example: `  kubectl agent whoami --broker https://broker.example.com --cluster prod
  kubectl agent whoami -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Complete()
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	return cmd
}

// Complete resolves the settings.
func (o *WhoamiOptions) Complete() {
	o.settings = resolveSessionSettings(o.Global, o.Getenv, credential.Config{})
}

// Validate checks settings and output format.
func (o *WhoamiOptions) Validate() error {
	if err := validateOutput(o.Output, "json", "yaml"); err != nil {
		return err
	}
	return o.settings.validate("kubectl agent whoami")
}

// Run prints the session.
func (o *WhoamiOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	m, err := newSessionManager(o.settings, o.Getenv)
	if err != nil {
		return err
	}
	e, err := m.Ensure(ctx)
	if err != nil {
		return err
	}
	// The broker's view is the truth (the session may have ended); the
	// cache is what we have when it cannot be asked.
	s, err := m.SessionClient(e).Get(ctx, e.Session.ID)
	if err != nil {
		return err
	}
	w := WhoAmI{Broker: m.Client.Broker(), Session: *s, TimeLeft: time.Until(s.ExpiresAt).Round(time.Second).String()}
	w.Session.Credential = nil // never print cluster tokens
	w.Session.KeyBinding = ""
	if done, err := printData(o.Out, o.Output, w); done {
		return err
	}
	return printWhoami(o.Out, w)
}

func printWhoami(out interface{ Write([]byte) (int, error) }, w WhoAmI) error {
	s := w.Session
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	id := s.Identity
	who := id.Subject
	if id.Repository != "" {
		who = id.Repository
	}
	run := id.RunID
	if id.RunAttempt != "" {
		run += " (attempt " + id.RunAttempt + ")"
	}
	state := "active"
	if s.Ended {
		state = "ended"
	}
	fmt.Fprintf(tw, "SESSION\t%s (%s)\n", s.ID, state)
	fmt.Fprintf(tw, "WHO\t%s\n", who)
	fmt.Fprintf(tw, "ISSUER\t%s\n", id.Issuer)
	if run != "" {
		fmt.Fprintf(tw, "RUN\t%s\n", run)
	}
	if id.Ref != "" {
		fmt.Fprintf(tw, "REF\t%s\n", id.Ref)
	}
	fmt.Fprintf(tw, "BROKER\t%s\n", w.Broker)
	fmt.Fprintf(tw, "CLUSTER\t%s\n", s.Cluster)
	g := s.Grant
	grant := "rule " + g.Rule
	if len(g.Namespaces) > 0 {
		grant += ", namespaces " + strings.Join(g.Namespaces, ",")
	} else if len(g.Rules) > 0 {
		grant += ", cluster-wide"
	}
	if g.IAMRole != "" {
		grant += ", IAM role " + g.IAMRole
	}
	fmt.Fprintf(tw, "GRANT\t%s\n", grant)
	for _, r := range g.Rules {
		fmt.Fprintf(tw, "\t%s %s\n", strings.Join(r.Verbs, ","), ruleTarget(r))
	}
	fmt.Fprintf(tw, "EXPIRES\t%s (%s left)\n", s.ExpiresAt.UTC().Format(time.RFC3339), w.TimeLeft)
	return tw.Flush()
}

func ruleTarget(r api.PolicyRule) string {
	if len(r.NonResourceURLs) > 0 {
		return strings.Join(r.NonResourceURLs, ",")
	}
	var parts []string
	for _, res := range r.Resources {
		for _, g := range orAll(r.APIGroups) {
			if g == "" {
				parts = append(parts, res)
			} else {
				parts = append(parts, res+"."+g)
			}
		}
	}
	s := strings.Join(parts, ",")
	if len(r.ResourceNames) > 0 {
		s += " named " + strings.Join(r.ResourceNames, ",")
	}
	return s
}

func orAll(groups []string) []string {
	if len(groups) == 0 {
		return []string{""}
	}
	return groups
}
