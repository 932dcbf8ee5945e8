package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/proxy"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
)

// Upstream is where `exec` sends allowed requests and what it starts from:
// the cluster credential, the base policy (the broker's, or none locally),
// and the session's facts for the transcript.
type Upstream struct {
	Config     *rest.Config
	BasePolicy *policy.Policy // nil: only the local policy (or the default)
	Cluster    string
	Namespace  string
	Mode       string // "local" or "broker"
	SessionID  string
	// Key and KeyBinding sign the transcript; a nil Key gets a fresh one.
	Key        ed25519.PrivateKey
	KeyBinding string
	Session    map[string]any    // facts for the policy's CEL `session`
	Identity   map[string]string // the run's verified identity, for the transcript
	Grant      api.Grant
	// Client makes the session's broker calls (transcript uploads,
	// approvals); nil in local mode.
	Client    *session.Client
	BrokerURL string
	// Done is called when the run ends; may be nil.
	Done func(ctx context.Context, exitCode int)
}

// leftoverPushGrace bounds how long exec waits, after the command ended, for
// the background push of earlier invocations' spools.
const leftoverPushGrace = 5 * time.Second

// ExecOptions are the options of `kubectl agent exec`.
type ExecOptions struct {
	g       *GlobalOptions
	streams genericiooptions.IOStreams

	PolicyFile       string
	TranscriptFile   string
	RequireRecording bool
	Command          []string

	// UpstreamFor resolves the upstream. Local mode (the current kubeconfig
	// context) by default; broker mode swaps it for a session's.
	UpstreamFor func(ctx context.Context) (*Upstream, error)
	// Getenv reads the environment (os.Getenv unless a test sets it).
	Getenv func(string) string

	localPolicy *policy.Policy
}

// NewExecCommand builds `kubectl agent exec`.
func NewExecCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ExecOptions{g: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "exec [--policy FILE] [--transcript FILE] [--require-recording] -- COMMAND [ARGS...]",
		Short: "Run a command whose cluster access goes through the guarded, recorded proxy",
		Long: `Run COMMAND with KUBECONFIG pointing at a loopback proxy. The proxy checks every API request
against the policy (a denied request gets kubectl's usual Forbidden error), masks Secret values in
every response, and records each request. The command never sees the cluster credential.

Without --broker, the upstream is the current kubeconfig context (--kubeconfig, --context and -n are
honored). The exit code is the command's own; 3 when kubectl-agent refused to start it (for
example, a policy that does not load).`,
		Example: `  # Run kubectl with a local deny list
  kubectl agent exec --policy policy.yaml -- kubectl delete ns prod

  # Run a deploy script and keep a signed transcript of what it did
  kubectl agent exec --transcript run.transcript.jsonl -- ./deploy.sh

  # Refuse any request that cannot be recorded
  kubectl agent exec --transcript run.transcript.jsonl --require-recording -- helm upgrade app ./chart`,
		Args: cobra.ArbitraryArgs,
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
	f := cmd.Flags()
	f.StringVar(&o.PolicyFile, "policy", "", "policy file whose rules are added to (and can only tighten) the session's")
	f.StringVar(&o.TranscriptFile, "transcript", "", "write the run's signed transcript to this file (must not exist)")
	f.BoolVar(&o.RequireRecording, "require-recording", false, "refuse any request that cannot be recorded before it is forwarded")
	return cmd
}

// Complete fills defaults from flags, environment and arguments.
func (o *ExecOptions) Complete(cmd *cobra.Command, args []string) error {
	dash := cmd.ArgsLenAtDash()
	if dash > 0 {
		return UsageError("unexpected arguments before --: %s (put the command after --)", strings.Join(args[:dash], " "))
	}
	o.Command = args
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.g.Broker == "" {
		o.g.Broker = o.Getenv("KUBECTL_AGENT_BROKER")
	}
	if o.UpstreamFor == nil {
		if o.g.Broker != "" {
			o.UpstreamFor = o.brokerUpstream
		} else {
			o.UpstreamFor = o.localUpstream
		}
	}
	return nil
}

// Validate checks the options.
func (o *ExecOptions) Validate() error {
	if len(o.Command) == 0 {
		return UsageError("no command given: kubectl agent exec [flags] -- COMMAND [ARGS...]")
	}
	return nil
}

// localUpstream is the current kubeconfig context.
func (o *ExecOptions) localUpstream(context.Context) (*Upstream, error) {
	loader := o.g.ConfigFlags.ToRawKubeConfigLoader()
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	ns, _, err := loader.Namespace()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig namespace: %w", err)
	}
	raw, err := loader.RawConfig()
	cluster := ""
	if err == nil {
		ctxName := raw.CurrentContext
		if o.g.ConfigFlags.Context != nil && *o.g.ConfigFlags.Context != "" {
			ctxName = *o.g.ConfigFlags.Context
		}
		if c, ok := raw.Contexts[ctxName]; ok {
			cluster = c.Cluster
		}
	}
	return &Upstream{Config: cfg, Namespace: ns, Cluster: cluster, Mode: "local", SessionID: "local-" + uuid.NewString()}, nil
}

// refused is exit code 3: kubectl-agent did not start the command.
func refused(format string, args ...any) error {
	return &ExitError{Code: ExitRefused, Err: fmt.Errorf(format, args...)}
}

// Run starts the proxy, runs the command through it and returns its exit
// code.
func (o *ExecOptions) Run(ctx context.Context) error {
	u := ui.NewWithEnv(o.streams.ErrOut, o.Getenv)
	if o.PolicyFile != "" {
		p, err := policy.Load(o.PolicyFile)
		if err != nil {
			return refused("policy %s does not load: %v", o.PolicyFile, err)
		}
		o.localPolicy = p
	}
	up, err := o.UpstreamFor(ctx)
	if err != nil {
		return refused("no cluster access for the command: %v", err)
	}
	pol := policy.Combine(up.BasePolicy, o.localPolicy)

	rec, spool, err := o.startRecorder(ctx, up, pol)
	if err != nil {
		return refused("cannot record the run: %v", err)
	}
	// What earlier invocations of this run could not upload goes now, beside the run.
	pushed := o.pushLeftovers(context.WithoutCancel(ctx), up, spool)

	var (
		mu      sync.Mutex
		denials []proxy.Outcome
	)
	opts := proxy.Options{
		Upstream: up.Config, Policy: pol, Session: up.Session, RequireRecording: o.RequireRecording,
		Notify: func(out proxy.Outcome) {
			if out.Decision.Action != policy.Deny {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			denials = append(denials, out)
			what := describe(out)
			if out.Decision.Rule != "" {
				u.Fail("denied %s by rule %q: %s", what, out.Decision.Rule, out.Decision.Message)
			} else {
				u.Fail("denied %s: %s", what, out.Decision.Message)
			}
			u.Annotate("error", "kubectl-agent denied a request", fmt.Sprintf("%s by rule %q: %s", what, out.Decision.Rule, out.Decision.Message))
		},
	}
	opts.Sink, opts.Tap = rec, rec.StreamTap()
	opts.Approver, err = o.approver(up, pol, rec)
	if err != nil {
		return refused("%v", err)
	}
	px, err := proxy.New(opts)
	if err != nil {
		return refused("starting the proxy: %v", err)
	}
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	if err := px.Start(pctx); err != nil {
		return refused("starting the proxy: %v", err)
	}
	defer px.Close()

	dir, err := os.MkdirTemp("", "kubectl-agent-")
	if err != nil {
		return refused("creating a temporary directory: %v", err)
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*px.Kubeconfig(up.Namespace), kubeconfig); err != nil {
		return refused("writing the proxy kubeconfig: %v", err)
	}
	if err := os.Chmod(kubeconfig, 0o600); err != nil {
		return refused("writing the proxy kubeconfig: %v", err)
	}

	code, runErr := o.runChild(ctx, kubeconfig, dir)

	c := px.Counts()
	summary := fmt.Sprintf("kubectl-agent: %d requests allowed, %d denied, %d objects masked", c.Allowed, c.Denied, c.Masked)
	if c.Errors > 0 {
		summary += fmt.Sprintf(", %d errors", c.Errors)
	}
	if c.Denied > 0 {
		u.Warn("%s", summary)
	} else {
		u.OK("%s", summary)
	}
	o.stepSummary(u, c, denials, code)
	stop()
	o.finishRecording(ctx, u, up, rec, spool, transcript.EndEvent{ExitCode: code, Counts: map[string]int64{
		"allowed": c.Allowed, "denied": c.Denied, "masked": c.Masked, "errors": c.Errors}})
	// Give a leftover push that is still going a moment to finish; it
	// resumes next time if not.
	select {
	case <-pushed:
	case <-time.After(leftoverPushGrace):
	}
	if up.Done != nil {
		up.Done(context.WithoutCancel(ctx), code)
	}
	if runErr != nil {
		return &ExitError{Code: ExitFailure, Err: runErr}
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

func describe(out proxy.Outcome) string {
	a := out.Attributes
	if !a.ResourceRequest {
		return fmt.Sprintf("%s %s", out.Method, out.Path)
	}
	what := a.Resource
	if a.Subresource != "" {
		what += "/" + a.Subresource
	}
	if a.Namespace != "" && a.Resource != "namespaces" {
		what = a.Namespace + "/" + what
	}
	if a.Name != "" {
		what += "/" + a.Name
	}
	return fmt.Sprintf("%s %s", out.Method, what)
}

// runChild runs the command with KUBECONFIG pointing at the proxy and
// forwards SIGINT, SIGTERM and SIGHUP to it. It returns the command's exit
// code (128+signal when a signal ended it, as shells report it).
func (o *ExecOptions) runChild(ctx context.Context, kubeconfig, dir string) (int, error) {
	cmd := exec.Command(o.Command[0], o.Command[1:]...)
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "KUBECONFIG="+kubeconfig)
	if o.Getenv("KUBECACHEDIR") == "" {
		// Discovery caches are keyed by server address, which is new every run.
		env = append(env, "KUBECACHEDIR="+filepath.Join(dir, "cache"))
	}
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.streams.In, o.streams.Out, o.streams.ErrOut

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127, fmt.Errorf("starting %s: %w", o.Command[0], err)
		}
		return 126, fmt.Errorf("starting %s: %w", o.Command[0], err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case <-ctx.Done():
			// Our own context ended (not a signal): stop the child, then wait.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-waited:
				return exitCode(err), nil
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				return exitCode(<-waited), nil
			}
		case err := <-waited:
			return exitCode(err), nil
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return ExitFailure
}

// stepSummary writes the GitHub Actions job summary: counts and one row per
// denial.
func (o *ExecOptions) stepSummary(u *ui.UI, c proxy.Counts, denials []proxy.Outcome, code int) {
	if !u.GitHub() {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "### kubectl agent exec: `%s`\n\n", strings.Join(o.Command, " "))
	fmt.Fprintf(&b, "Exit code %d. Requests: %d allowed, %d denied, %d objects masked.\n\n", code, c.Allowed, c.Denied, c.Masked)
	if len(denials) > 0 {
		b.WriteString("| Request | Rule | Message |\n|---|---|---|\n")
		for _, d := range denials {
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", describe(d), mdCell(d.Decision.Rule), mdCell(d.Decision.Message))
		}
	}
	if err := u.StepSummary(b.String()); err != nil {
		u.Warn("%v", err)
	}
}

func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
