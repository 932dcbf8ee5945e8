package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/charmbracelet/lipgloss"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
)

// CheckOptions previews, offline, the API requests a kubectl command line
// would make and the policy's decision for each.
type CheckOptions struct {
	PolicyFile string
	Output     string

	// Args is the kubectl command line (after --), with or without "kubectl".
	Args []string
	// DefaultNamespace is the namespace kubectl would use without -n.
	DefaultNamespace string
	// Dir is where relative -f/-k paths are read from ("" = current directory).
	Dir string
	// Env reads the environment (for UI styling and GitHub annotations).
	Env func(string) string

	g      *GlobalOptions
	policy *policy.Policy
	genericiooptions.IOStreams
}

// CheckResult is `check -o json`'s document.
type CheckResult struct {
	Decision policy.Action  `json:"decision"`
	Requests []CheckRequest `json:"requests"`
}

// CheckRequest is one request of a CheckResult.
type CheckRequest struct {
	Verb        string        `json:"verb"`
	APIGroup    string        `json:"apiGroup"`
	Resource    string        `json:"resource"`
	Subresource string        `json:"subresource"`
	Namespace   string        `json:"namespace"`
	Name        string        `json:"name"`
	Decision    policy.Action `json:"decision"`
	Rule        string        `json:"rule"`
	Message     string        `json:"message"`
	Method      string        `json:"method"`
	Path        string        `json:"path"`
	Description string        `json:"description,omitempty"`
	Impersonate []string      `json:"impersonate,omitempty"`
	DryRun      bool          `json:"dryRun,omitempty"`
}

// NewCheckCommand is `kubectl agent check`.
func NewCheckCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CheckOptions{g: g, IOStreams: streams, Env: os.Getenv}
	cmd := &cobra.Command{
		Use:   "check [--policy FILE] [-o json|yaml] -- kubectl ARGS...",
		Short: "Preview the API requests of a kubectl command and the policy's decision, without a cluster",
		Long: `check maps a kubectl command line to the API requests it would make (verb, API group,
resource, subresource, namespace, name) and evaluates each against the policy: the file given with
--policy, or the default policy (allow everything, mask Secrets). It never contacts a cluster; the
namespace without -n is the kubeconfig context's, or "default".

Exit status: 0 if every request is allowed, 3 if any is denied, 4 if any needs approval (and none is
denied), 2 if the command line cannot be mapped, 1 if the policy does not load.`,
		Example: `  # Would this be allowed?
  kubectl agent check --policy policy.yaml -- kubectl delete ns prod

  # Manifests and kustomizations are read locally
  kubectl agent check --policy policy.yaml -- kubectl apply -k overlays/prod

  # Machine-readable, for scripts
  kubectl agent check --policy policy.yaml -o json -- kubectl exec -n kube-system etcd-0 -- sh`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.PolicyFile, "policy", "", "policy file to check against (default: allow everything)")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml (default: a table)")
	return cmd
}

// Complete takes the command line after "--", the default namespace from the
// kubeconfig (if one loads) and loads the policy.
func (o *CheckOptions) Complete(cmd *cobra.Command, args []string) error {
	if cmd != nil {
		if at := cmd.ArgsLenAtDash(); at > 0 {
			return UsageError("unexpected arguments before --: %s (put the kubectl command line after --)", strings.Join(args[:at], " "))
		}
	}
	o.Args = args
	if o.DefaultNamespace == "" && o.g != nil && o.g.ConfigFlags != nil {
		if ns, _, err := o.g.ConfigFlags.ToRawKubeConfigLoader().Namespace(); err == nil {
			o.DefaultNamespace = ns
		}
	}
	if o.DefaultNamespace == "" {
		o.DefaultNamespace = "default"
	}
	if o.Env == nil {
		o.Env = os.Getenv
	}
	if o.PolicyFile == "" {
		o.policy = policy.Default()
		return nil
	}
	p, err := policy.Load(o.PolicyFile)
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	o.policy = p
	return nil
}

// Validate checks the output format and that there is a command line.
func (o *CheckOptions) Validate() error {
	if err := validateOutput(o.Output, "json", "yaml"); err != nil {
		return err
	}
	if len(o.Args) == 0 || (len(o.Args) == 1 && o.Args[0] == "kubectl") {
		return UsageError("no kubectl command line: use kubectl agent check -- kubectl ARGS...")
	}
	return nil
}

// Evaluate maps and decides without printing (the engine behind Run, also
// used by the deny-bypass corpus).
func (o *CheckOptions) Evaluate(ctx context.Context) (*CheckResult, error) {
	var warnings []string
	reqs, err := policy.MapKubectl(o.Args, policy.MapOptions{
		DefaultNamespace: o.DefaultNamespace,
		Dir:              o.Dir,
		Warn:             func(s string) { warnings = append(warnings, s) },
	})
	if err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	if len(warnings) > 0 && o.ErrOut != nil {
		u := ui.NewWithEnv(o.ErrOut, o.Env)
		for _, w := range warnings {
			u.Warn("%s", w)
		}
	}
	pol := o.policy
	if pol == nil {
		pol = policy.Default()
	}
	res := &CheckResult{Decision: policy.Allow, Requests: []CheckRequest{}}
	for _, r := range reqs {
		d, err := pol.Evaluate(ctx, policy.Input{Attributes: r.Attributes, Object: r.Object})
		if err != nil {
			// Fail closed, as the proxy does.
			d = policy.Decision{Action: policy.Deny, Rule: d.Rule, Message: fmt.Sprintf("policy evaluation failed, so the request is denied: %v", err)}
		}
		res.Requests = append(res.Requests, CheckRequest{
			Verb: r.Verb, APIGroup: r.APIGroup, Resource: r.Resource, Subresource: r.Subresource,
			Namespace: r.Namespace, Name: r.Name, Decision: d.Action, Rule: d.Rule, Message: d.Message,
			Method: r.Method, Path: r.Path, Description: r.Description, Impersonate: r.Impersonate, DryRun: r.DryRun,
		})
		res.Decision = stronger(res.Decision, d.Action)
	}
	return res, nil
}

func stronger(a, b policy.Action) policy.Action {
	rank := map[policy.Action]int{policy.Allow: 0, policy.Approve: 1, policy.Deny: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// Run prints the requests and decisions and sets the exit code.
func (o *CheckOptions) Run(ctx context.Context) error {
	res, err := o.Evaluate(ctx)
	if err != nil {
		return err
	}
	done, err := printData(o.Out, o.Output, res)
	if err != nil {
		return err
	}
	if !done {
		if err := o.printTable(res); err != nil {
			return err
		}
	}
	switch res.Decision {
	case policy.Deny:
		return &ExitError{Code: ExitRefused}
	case policy.Approve:
		return &ExitError{Code: ExitApprove}
	}
	return nil
}

func (o *CheckOptions) printTable(res *CheckResult) error {
	out := ui.NewWithEnv(o.Out, o.Env)
	status := ui.NewWithEnv(o.ErrOut, o.Env)
	if len(res.Requests) == 0 {
		status.OK("kubectl %s makes no API requests that the policy decides on", strings.Join(trimKubectl(o.Args), " "))
		return nil
	}
	// The decision column is styled after alignment, so escape codes do
	// not upset the tabwriter.
	var buf strings.Builder
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERB\tRESOURCE\tNAMESPACE\tNAME\tRULE")
	for _, r := range res.Requests {
		resource := r.Resource
		if r.APIGroup != "" {
			resource += "." + r.APIGroup
		}
		if r.Subresource != "" {
			resource += "/" + r.Subresource
		}
		if resource == "" {
			resource = r.Path
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Verb, resource, orDash(r.Namespace), orDash(r.Name), orDash(r.Rule))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	for i, l := range lines {
		head := fmt.Sprintf("%-10s", "DECISION")
		if i > 0 {
			head = styleDecision(out, res.Requests[i-1].Decision, fmt.Sprintf("%-10s", strings.ToUpper(string(res.Requests[i-1].Decision))))
		}
		if _, err := fmt.Fprintf(o.Out, "%s%s\n", head, l); err != nil {
			return err
		}
	}
	line := "kubectl " + strings.Join(trimKubectl(o.Args), " ")
	for _, r := range res.Requests {
		if r.Decision == res.Decision && r.Decision != policy.Allow {
			msg := fmt.Sprintf("%s %s: %s", r.Verb, r.Resource, r.Message)
			if res.Decision == policy.Deny {
				status.Fail("%s", msg)
				status.Annotate("error", "kubectl-agent check: denied", line+": "+msg)
			} else {
				status.Warn("%s", msg)
				status.Annotate("warning", "kubectl-agent check: needs approval", line+": "+msg)
			}
		}
	}
	switch res.Decision {
	case policy.Deny:
		status.Fail("%s would be denied", line)
	case policy.Approve:
		status.Warn("%s needs approval", line)
	default:
		status.OK("%s is allowed", line)
	}
	return nil
}

func trimKubectl(args []string) []string {
	if len(args) > 0 && args[0] == "kubectl" {
		return args[1:]
	}
	return args
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// styleDecision colors a decision (green allow, yellow approve, red deny)
// when the UI is styled.
func styleDecision(u *ui.UI, d policy.Action, text string) string {
	if !u.Color() {
		return text
	}
	color := map[policy.Action]string{policy.Allow: "10", policy.Approve: "11", policy.Deny: "9"}[d]
	return u.Renderer().NewStyle().Foreground(lipgloss.Color(color)).Bold(true).Render(text)
}
