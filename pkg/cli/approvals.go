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
	"github.com/kubectl-agent/kubectl-agent/pkg/approval"
	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
)

// ApprovalsOptions are the options of `kubectl agent approvals ...`.
type ApprovalsOptions struct {
	g       *GlobalOptions
	streams genericiooptions.IOStreams

	Action string // list, show, approve, deny
	ID     string
	Reason string
	Output string

	// Getenv reads the environment (os.Getenv unless a test sets it).
	Getenv func(string) string
	// Now is the clock for "expires in" (time.Now unless a test sets it).
	Now func() time.Time

	client *approval.ReviewerClient
}

// NewApprovalsCommand builds `kubectl agent approvals`.
func NewApprovalsCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "Review requests that pipelines hold for human approval",
		Long: `List, read, approve or deny requests that kubectl-agent runs hold for approval.

You review with your own cluster identity: the command sends the bearer token of your current
kubeconfig context to the broker, which checks it with a TokenReview on the request's cluster and
authorizes you with a SubjectAccessReview. Who may decide is plain RBAC: the verb "approve" on
approvals.kubectl-agent.io (name = the approval id, namespace = the request's namespace; "get" to
read, "list" to list). Nobody decides their own run's request, and ServiceAccounts (pipelines)
never decide.

Credentials: a token, a token file, or an exec/auth-provider plugin that yields a token (OIDC,
cloud IAM) work; client-certificate credentials do not (the broker cannot check them).`,
		Example: `  # What is waiting?
  kubectl agent approvals list --broker https://broker.example.com

  # Read one, with its dry-run diff
  kubectl agent approvals show apr-k3x9... --broker https://broker.example.com

  # Decide
  kubectl agent approvals approve apr-k3x9... --reason "planned teardown of staging"
  kubectl agent approvals deny apr-k3x9... --reason "not during the freeze"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	sub := func(action, use, short, example string, args cobra.PositionalArgs) *cobra.Command {
		o := &ApprovalsOptions{g: g, streams: streams, Action: action}
		c := &cobra.Command{
			Use: use, Short: short, Example: example, Args: args,
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := o.Complete(args); err != nil {
					return err
				}
				if err := o.Validate(); err != nil {
					return err
				}
				return o.Run(cmd.Context())
			},
		}
		c.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml (default: text)")
		if action == api.VerdictApprove || action == api.VerdictDeny {
			c.Flags().StringVar(&o.Reason, "reason", "", "why (recorded with your name in the broker and the run's transcript)")
		}
		return c
	}
	cmd.AddCommand(
		sub("list", "list", "List pending approvals you may read", "  kubectl agent approvals list --broker https://broker.example.com", cobra.NoArgs),
		sub("show", "show ID", "Show an approval with its dry-run preview", "  kubectl agent approvals show apr-k3x9... -o yaml", cobra.ExactArgs(1)),
		sub(api.VerdictApprove, "approve ID [--reason TEXT]", "Approve a held request", `  kubectl agent approvals approve apr-k3x9... --reason "planned"`, cobra.ExactArgs(1)),
		sub(api.VerdictDeny, "deny ID [--reason TEXT]", "Deny a held request", `  kubectl agent approvals deny apr-k3x9... --reason "not now"`, cobra.ExactArgs(1)),
	)
	return cmd
}

// Complete reads the broker URL and the reviewer's token from the kubeconfig.
func (o *ApprovalsOptions) Complete(args []string) error {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(args) > 0 {
		o.ID = args[0]
	}
	if o.g.Broker == "" {
		o.g.Broker = o.Getenv("KUBECTL_AGENT_BROKER")
	}
	if o.g.Broker == "" {
		return UsageError("no broker: pass --broker URL (or set KUBECTL_AGENT_BROKER)")
	}
	if o.Output != "" && o.Output != "json" && o.Output != "yaml" {
		return UsageError("--output %q: use json or yaml", o.Output)
	}
	cfg, err := o.g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("reading your kubeconfig (you review with your own cluster identity): %w", err)
	}
	tok, err := approval.BearerToken(cfg)
	if err != nil {
		return err
	}
	c, err := approval.NewReviewerClient(o.g.Broker, tok)
	if err != nil {
		return UsageError("%v", err)
	}
	o.client = c
	return nil
}

// Validate checks the arguments.
func (o *ApprovalsOptions) Validate() error {
	if o.Action != "list" && strings.TrimSpace(o.ID) == "" {
		return UsageError("an approval id is required (see `kubectl agent approvals list`)")
	}
	if len(o.Reason) > 2000 {
		return UsageError("--reason is longer than 2000 characters")
	}
	return nil
}

// Run does the action.
func (o *ApprovalsOptions) Run(ctx context.Context) error {
	switch o.Action {
	case "list":
		list, err := o.client.List(ctx)
		if err != nil {
			return err
		}
		if o.Output != "" {
			return o.print(api.ApprovalList{Approvals: list})
		}
		if len(list) == 0 {
			fmt.Fprintln(o.streams.ErrOut, "No pending approvals you may read.")
			return nil
		}
		tw := tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tREQUEST\tRUN\tRULE\tEXPIRES")
		for _, a := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, clean(approval.Summary(a)), clean(runOf(a.Requester)), clean(a.Rule), left(a.ExpiresAt, o.Now()))
		}
		return tw.Flush()
	case "show":
		a, err := o.client.Get(ctx, o.ID)
		if err != nil {
			return err
		}
		if o.Output != "" {
			return o.print(a)
		}
		o.describe(a)
		return nil
	default:
		a, err := o.client.Decide(ctx, o.ID, o.Action, o.Reason)
		if err != nil {
			return err
		}
		if o.Output != "" {
			return o.print(a)
		}
		u := ui.NewWithEnv(o.streams.ErrOut, o.Getenv)
		approvals := 0
		for _, d := range a.Decisions {
			if d.Verdict == api.VerdictApprove {
				approvals++
			}
		}
		switch a.State {
		case api.ApprovalApproved:
			u.OK("approved %s: %s may proceed", a.ID, clean(approval.Summary(*a)))
		case api.ApprovalDenied:
			u.OK("denied %s: %s will be refused", a.ID, clean(approval.Summary(*a)))
		default:
			u.OK("recorded your approval of %s (%d of %d needed)", a.ID, approvals, a.Required)
		}
		return nil
	}
}

func (o *ApprovalsOptions) print(v any) error {
	output := o.Output
	if output != "yaml" {
		output = "json"
	}
	_, err := printData(o.streams.Out, output, v)
	return err
}

// clean keeps request data from moving the cursor or recoloring a reviewer's
// terminal: control characters are shown as escapes.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func runOf(id api.Identity) string {
	s := id.Repository
	if s == "" {
		s = id.Subject
	}
	if id.RunID != "" {
		s += " run " + id.RunID
	}
	return s
}

func left(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	return d.String()
}

func (o *ApprovalsOptions) describe(a *api.Approval) {
	w := o.streams.Out
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-10s %s\n", k+":", clean(v))
		}
	}
	line("ID", a.ID)
	line("State", a.State)
	line("Request", approval.Summary(*a))
	line("HTTP", a.Method+" "+a.Path)
	line("Rule", a.Rule)
	line("Message", a.Message)
	line("Run", runOf(a.Requester))
	if actor := a.Requester.Claims["actor"]; actor != "" {
		line("Started by", actor)
	}
	line("Command", strings.Join(a.Command, " "))
	line("Cluster", a.Cluster)
	line("Expires", fmt.Sprintf("%s (%s)", a.ExpiresAt.UTC().Format(time.RFC3339), left(a.ExpiresAt, o.Now())))
	needs := fmt.Sprintf("%d approval(s)", a.Required)
	if len(a.Groups) > 0 {
		needs += " from " + strings.Join(a.Groups, ", ")
	}
	line("Needs", needs)
	line("Web", a.URL)
	for _, d := range a.Decisions {
		line("Decision", fmt.Sprintf("%s %s at %s: %s", d.Reviewer, d.Verdict, d.Time.UTC().Format(time.RFC3339), d.Reason))
	}
	if p := a.Preview; p != nil {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Preview (%s, dry run: %v)\n", p.Kind, p.DryRun)
		if p.Note != "" {
			fmt.Fprintf(w, "  %s\n", clean(p.Note))
		}
		for _, c := range p.Deletes {
			fmt.Fprintf(w, "  %-40s %d\n", clean(c.Resource), c.Count)
		}
		for _, text := range []string{p.Diff, p.Object} {
			if text == "" {
				continue
			}
			fmt.Fprintln(w)
			for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
				fmt.Fprintf(w, "  %s\n", clean(l))
			}
		}
	}
}
