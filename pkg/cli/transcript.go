package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/lipgloss"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
)

// TranscriptFilter selects transcripts at the broker; empty fields match
// everything. Since and Until are RFC 3339 times or durations back from now.
type TranscriptFilter struct {
	Repository, Run, Cluster, Session string
	Since, Until                      string
	Decision                          string // allow, deny or approve
}

// TranscriptClient reads transcripts stored at the broker.
type TranscriptClient interface {
	ListTranscripts(ctx context.Context, f TranscriptFilter) ([]api.TranscriptSummary, error)
	// GetTranscript returns a transcript's JSON lines ("" transcript id:
	// the session's transcript recorded before transcripts had ids).
	GetTranscript(ctx context.Context, sessionID, transcriptID string) ([]byte, error)
}

// TranscriptDeps are the broker-facing parts of `transcript`, wired by the
// caller (the session client implements them). Zero values make the
// commands that need them fail with a clear message.
type TranscriptDeps struct {
	// NewUploader returns an Uploader for a session's transcript
	// (POST /v1/sessions/{id}/transcript, DPoP-authenticated).
	NewUploader func(ctx context.Context, g *GlobalOptions, start transcript.StartEvent) (transcript.Uploader, error)
	// NewClient returns a client for listing and fetching transcripts.
	NewClient func(ctx context.Context, g *GlobalOptions) (TranscriptClient, error)
}

// NewTranscriptCommand is `kubectl agent transcript` without broker wiring.
func NewTranscriptCommand(g *GlobalOptions, streams genericiooptions.IOStreams) *cobra.Command {
	return NewTranscriptCommandWith(g, streams, TranscriptDeps{})
}

// NewTranscriptCommandWith is `kubectl agent transcript` with the broker
// parts given.
func NewTranscriptCommandWith(g *GlobalOptions, streams genericiooptions.IOStreams, deps TranscriptDeps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "transcript",
		Short: "Verify, show, replay and export signed run transcripts",
		Long: `A transcript is the signed, hash-chained record of one run: every API request with its policy
decision, exec stream output, approvals, and the end. It is sealed with the run's session key, which
the broker binds to the run's identity. See docs/transcript.md.`,
		Example: `  kubectl agent transcript verify run.transcript.jsonl --jwks https://broker.example.com/.well-known/jwks.json
  kubectl agent transcript show run.transcript.jsonl
  kubectl agent transcript export run.transcript.jsonl --format asciicast > exec.cast`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newTranscriptVerifyCommand(streams),
		newTranscriptShowCommand(streams),
		newTranscriptReplayCommand(streams),
		newTranscriptExportCommand(streams),
		newTranscriptPushCommand(g, streams, deps),
		newTranscriptListCommand(g, streams, deps),
		newTranscriptGetCommand(g, streams, deps),
	)
	return cmd
}

func runOptions(c interface {
	Complete([]string) error
	Validate() error
	Run(context.Context) error
}) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := c.Complete(args); err != nil {
			return err
		}
		if err := c.Validate(); err != nil {
			return err
		}
		return c.Run(cmd.Context())
	}
}

// ---- verify

// TranscriptVerifyOptions are the options of `transcript verify`.
type TranscriptVerifyOptions struct {
	File          string
	JWKS          string
	AllowUnsealed bool
	Output        string
	genericiooptions.IOStreams
}

func newTranscriptVerifyCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &TranscriptVerifyOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a transcript's hash chain, signatures, seal and key binding",
		Long: `Verify checks every line of a transcript offline: sequence numbers, the hash chain, every signed
checkpoint, the seal (a DSSE envelope signed by the session key over the digest of every line) and,
with --jwks, the broker's binding of the session key to the run. It exits 0 when the transcript is
intact and 1 naming the first bad line otherwise. A transcript without a seal (the run was killed,
or the tail was cut off) fails unless --allow-unsealed; either way it says up to which line
signatures cover it. A local-mode transcript has no broker binding: it verifies for integrity, and
fails when --jwks is given.`,
		Example: `  kubectl agent transcript verify run.transcript.jsonl --jwks https://broker.example.com/.well-known/jwks.json
  kubectl agent transcript verify run.transcript.jsonl --jwks jwks.json -o json`,
		Args: cobra.ExactArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.JWKS, "jwks", "", "the broker's JWKS, a file or URL (https://BROKER/.well-known/jwks.json)")
	cmd.Flags().BoolVar(&o.AllowUnsealed, "allow-unsealed", false, "exit 0 for an intact transcript that has no seal (yet)")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json")
	return cmd
}

// Complete takes the file argument.
func (o *TranscriptVerifyOptions) Complete(args []string) error { o.File = args[0]; return nil }

// Validate checks the output format.
func (o *TranscriptVerifyOptions) Validate() error { return validateOutput(o.Output, "json") }

// Run verifies.
func (o *TranscriptVerifyOptions) Run(ctx context.Context) error {
	var jwks *jose.JSONWebKeySet
	if o.JWKS != "" {
		var err error
		if jwks, err = transcript.LoadJWKS(ctx, o.JWKS, nil); err != nil {
			return err
		}
	}
	f, err := os.Open(o.File)
	if err != nil {
		return fmt.Errorf("opening transcript: %w", err)
	}
	defer f.Close()
	rep, verr := transcript.Verify(f, transcript.VerifyOptions{JWKS: jwks})
	unsealedOK := verr != nil && errors.Is(verr, transcript.ErrUnsealed) && o.AllowUnsealed
	if o.Output == "json" {
		out := struct {
			OK    bool   `json:"ok"`
			Error string `json:"error,omitempty"`
			*transcript.Report
		}{OK: verr == nil || unsealedOK, Report: rep}
		if verr != nil {
			out.Error = verr.Error()
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(o.Out, "%s\n", b)
	} else {
		o.printReport(rep, verr)
	}
	if verr != nil && !unsealedOK {
		if o.Output == "" {
			return &ExitError{Code: ExitFailure} // the report above already says why
		}
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("%s: %w", o.File, verr)}
	}
	return nil
}

func (o *TranscriptVerifyOptions) printReport(rep *transcript.Report, verr error) {
	u := ui.New(o.Out)
	switch {
	case verr == nil:
		who := ""
		switch {
		case !rep.Bound:
			who = "; the key is not bound by a broker (local mode): this proves integrity, not who ran it"
		case rep.Binding != nil && rep.BindingVerified:
			who = fmt.Sprintf(", bound to %s by broker %s", runName(rep.Binding), rep.Binding.Issuer)
		case rep.Binding != nil:
			who = fmt.Sprintf(", claims to be bound to %s by %s (binding NOT checked: give --jwks)", runName(rep.Binding), rep.Binding.Issuer)
		}
		exit := ""
		if rep.ExitCode != nil {
			exit = fmt.Sprintf(", exit code %d", *rep.ExitCode)
		}
		u.OK("sealed, %d events, signed by session %s (key %s)%s%s", rep.Lines-1, rep.SessionID, rep.KeyID, who, exit)
	case errors.Is(verr, transcript.ErrUnsealed):
		u.Warn("unsealed: verified up to line %d of %d (session %s)", rep.VerifiedUpTo, rep.Lines, rep.SessionID)
	default:
		// On stderr, where scripts look for why a command failed.
		ui.New(o.ErrOut).Fail("verification failed: %s: %v", o.File, verr)
	}
}

func runName(c *transcript.KeyBindingClaims) string {
	id := c.Identity
	name := id.Repository
	if name == "" {
		name = id.Subject
	}
	if id.RunID != "" {
		name += " run " + id.RunID
		if id.RunAttempt != "" {
			name += " attempt " + id.RunAttempt
		}
	}
	return name
}

// ---- show

// TranscriptShowOptions are the options of `transcript show`.
type TranscriptShowOptions struct {
	File   string
	Output string
	genericiooptions.IOStreams
}

func newTranscriptShowCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &TranscriptShowOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "show FILE",
		Short: "Show a transcript as a timeline of requests, decisions and streams",
		Long: `Show prints a transcript as a timeline: time, verb, resource, decision and response status of
every request, and the command, exec streams, approvals and end. It does not verify: run
'transcript verify' for that. -o json prints the events.`,
		Example: `  kubectl agent transcript show run.transcript.jsonl
  kubectl agent transcript show run.transcript.jsonl -o json | jq '.[] | select(.type=="request")'`,
		Args: cobra.ExactArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json or yaml")
	return cmd
}

// Complete takes the file argument.
func (o *TranscriptShowOptions) Complete(args []string) error { o.File = args[0]; return nil }

// Validate checks the output format.
func (o *TranscriptShowOptions) Validate() error { return validateOutput(o.Output, "json", "yaml") }

// Run prints the timeline.
func (o *TranscriptShowOptions) Run(ctx context.Context) error {
	events, err := readTranscriptFile(o.File)
	if err != nil {
		return err
	}
	if done, err := printData(o.Out, o.Output, events); done {
		return err
	}
	u := ui.New(o.Out)
	r := u.Renderer()
	// Cells are cut to their column (with …), never wrapped: a timeline
	// reads one event per line.
	col := func(w int) lipgloss.Style {
		return r.NewStyle().Width(w).MaxWidth(w).Transform(func(s string) string { return fit(s, w-1) })
	}
	head := r.NewStyle().Bold(true)
	dec := map[string]lipgloss.Style{
		"allow":   r.NewStyle().Foreground(lipgloss.Color("10")),
		"deny":    r.NewStyle().Foreground(lipgloss.Color("9")).Bold(true),
		"approve": r.NewStyle().Foreground(lipgloss.Color("11")),
	}
	if !u.Color() {
		// Plain text: lipgloss still writes bold without colors.
		head, dec = r.NewStyle(), nil
	}
	row := func(t, verb, resource, decision, status string) {
		ds := col(9)
		if s, ok := dec[decision]; ok {
			ds = s.Width(9)
		}
		fmt.Fprintln(o.Out, strings.TrimRight(col(14).Render(t)+col(10).Render(verb)+col(48).Render(resource)+ds.Render(decision)+status, " "))
	}
	fmt.Fprintln(o.Out, head.Render(fmt.Sprintf("%-14s%-10s%-48s%-9s%s", "TIME", "VERB", "RESOURCE", "DECISION", "STATUS")))
	var t0 time.Time
	for _, ev := range events {
		if t0.IsZero() {
			t0 = ev.Time
		}
		ts := "+" + ev.Time.Sub(t0).Round(time.Millisecond).String()
		switch ev.Type {
		case transcript.TypeStart:
			s := ev.Start
			row(ev.Time.Format("15:04:05.000"), "start", fmt.Sprintf("session %s on %s (%s mode)", s.SessionID, s.Cluster, s.Mode), "", "")
		case transcript.TypeCommand:
			row(ts, "command", strings.Join(ev.Command.Argv, " "), "", "")
		case transcript.TypeRequest:
			q := ev.Request
			status := ""
			if q.ResponseStatus != nil {
				status = fmt.Sprint(q.ResponseStatus.Code)
				if q.ResponseStatus.Reason != "" {
					status += " " + q.ResponseStatus.Reason
				}
			}
			if q.Rule != "" && q.Decision != "allow" {
				status += " (" + q.Rule + ")"
			}
			row(ts, q.Verb, resourceName(q), q.Decision, status)
		case transcript.TypeStream:
			s := ev.Stream
			switch {
			case s.Channel == "open" || s.Channel == "close":
				row(ts, "stream", s.Channel+" "+s.AuditID+" "+s.Protocol, "", "")
			case s.Exit != nil:
				row(ts, "stream", "exit "+s.AuditID, "", fmt.Sprintf("exit %d", *s.Exit))
			}
		case transcript.TypeApproval:
			a := ev.Approval
			row(ts, "approval", a.ID+" for "+a.AuditID, a.State, strings.TrimSpace(a.Reviewer+" "+a.Reason))
		case transcript.TypeEnd:
			row(ts, "end", fmt.Sprintf("%d requests", ev.End.Counts["requests"]), "", fmt.Sprintf("exit %d", ev.End.ExitCode))
		case transcript.TypeSeal:
			row(ts, "seal", "", "", "")
		}
	}
	return nil
}

// fit cuts s to at most w runes, ending in … when cut.
func fit(s string, w int) string {
	r := []rune(s)
	if len(r) <= w || w < 1 {
		return s
	}
	return string(r[:w-1]) + "…"
}

func resourceName(q *transcript.RequestEvent) string {
	ref := q.ObjectRef
	if ref == nil || ref.Resource == "" {
		return q.RequestURI
	}
	var b strings.Builder
	if ref.Namespace != "" && !(ref.Resource == "namespaces" && ref.APIGroup == "") {
		b.WriteString(ref.Namespace + "/")
	}
	b.WriteString(ref.Resource)
	if ref.APIGroup != "" {
		b.WriteString("." + ref.APIGroup)
	}
	if ref.Name != "" {
		b.WriteString("/" + ref.Name)
	}
	if ref.Subresource != "" {
		b.WriteString("/" + ref.Subresource)
	}
	return b.String()
}

func readTranscriptFile(path string) ([]transcript.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening transcript: %w", err)
	}
	defer f.Close()
	evs, err := transcript.ReadEvents(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return evs, nil
}

// ---- replay

// TranscriptReplayOptions are the options of `transcript replay`.
type TranscriptReplayOptions struct {
	File     string
	Speed    float64
	Session  string
	MaxPause time.Duration
	// Sleep waits between outputs (a context-aware time.Sleep unless a test sets it).
	Sleep func(context.Context, time.Duration) error
	genericiooptions.IOStreams
}

func newTranscriptReplayCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &TranscriptReplayOptions{IOStreams: streams, Speed: 1, MaxPause: 2 * time.Second, Sleep: sleepCtx}
	cmd := &cobra.Command{
		Use:   "replay FILE",
		Short: "Play exec and attach output back with its recorded timing",
		Example: `  kubectl agent transcript replay run.transcript.jsonl
  kubectl agent transcript replay run.transcript.jsonl --speed 4 --session 5f1c0e1a-...`,
		Args: cobra.ExactArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().Float64Var(&o.Speed, "speed", o.Speed, "playback speed factor")
	cmd.Flags().StringVar(&o.Session, "session", "", "only the stream opened by this request (its audit ID)")
	cmd.Flags().DurationVar(&o.MaxPause, "max-pause", o.MaxPause, "cut longer pauses to this")
	return cmd
}

// Complete takes the file argument.
func (o *TranscriptReplayOptions) Complete(args []string) error { o.File = args[0]; return nil }

// Validate checks the speed.
func (o *TranscriptReplayOptions) Validate() error {
	if o.Speed <= 0 {
		return UsageError("--speed must be greater than 0, e.g. --speed 2")
	}
	return nil
}

// Run replays.
func (o *TranscriptReplayOptions) Run(ctx context.Context) error {
	sessions, err := o.sessions()
	if err != nil {
		return err
	}
	return transcript.Replay(ctx, o.Out, sessions, o.Speed, o.MaxPause, o.Sleep)
}

func (o *TranscriptReplayOptions) sessions() ([]*transcript.StreamSession, error) {
	events, err := readTranscriptFile(o.File)
	if err != nil {
		return nil, err
	}
	return pickSessions(transcript.StreamSessions(events), o.Session)
}

func pickSessions(all []*transcript.StreamSession, id string) ([]*transcript.StreamSession, error) {
	if id == "" {
		return all, nil
	}
	for _, s := range all {
		if s.AuditID == id {
			return []*transcript.StreamSession{s}, nil
		}
	}
	ids := make([]string, 0, len(all))
	for _, s := range all {
		ids = append(ids, s.AuditID)
	}
	return nil, UsageError("no stream session %q in the transcript; it has: %s", id, strings.Join(ids, ", "))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- export

// TranscriptExportOptions are the options of `transcript export`.
type TranscriptExportOptions struct {
	File    string
	Format  string
	OutDir  string
	Session string
	genericiooptions.IOStreams
}

func newTranscriptExportCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &TranscriptExportOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "export FILE --format asciicast|audit",
		Short: "Export exec sessions as asciicast v2, or requests as audit.k8s.io/v1 events",
		Long: `asciicast: one asciicast v2 recording per exec/attach session (play it with asciinema). With one
session (or --session) it goes to stdout; with several, give --out-dir to get AUDITID.cast files.
audit: one audit.k8s.io/v1 Event JSON line per API request, with the policy decision in annotations;
the auditIDs are those the cluster logged, so they join with its audit log.`,
		Example: `  kubectl agent transcript export run.transcript.jsonl --format asciicast > exec.cast
  kubectl agent transcript export run.transcript.jsonl --format asciicast --out-dir casts/
  kubectl agent transcript export run.transcript.jsonl --format audit > audit.jsonl`,
		Args: cobra.ExactArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.Format, "format", "", "asciicast or audit")
	cmd.Flags().StringVar(&o.OutDir, "out-dir", "", "asciicast: write one AUDITID.cast file per session into this directory")
	cmd.Flags().StringVar(&o.Session, "session", "", "asciicast: only the session opened by this request (its audit ID)")
	return cmd
}

// Complete takes the file argument.
func (o *TranscriptExportOptions) Complete(args []string) error { o.File = args[0]; return nil }

// Validate checks the format.
func (o *TranscriptExportOptions) Validate() error {
	if o.Format != "asciicast" && o.Format != "audit" {
		return UsageError("--format must be asciicast or audit")
	}
	if o.Format == "audit" && (o.OutDir != "" || o.Session != "") {
		return UsageError("--out-dir and --session go with --format asciicast")
	}
	return nil
}

// Run exports.
func (o *TranscriptExportOptions) Run(ctx context.Context) error {
	events, err := readTranscriptFile(o.File)
	if err != nil {
		return err
	}
	if o.Format == "audit" {
		return transcript.WriteAudit(o.Out, events)
	}
	sessions, err := pickSessions(transcript.StreamSessions(events), o.Session)
	if err != nil {
		return err
	}
	if o.OutDir == "" {
		switch len(sessions) {
		case 0:
			return &ExitError{Code: ExitFailure, Err: errors.New("the transcript has no exec or attach sessions")}
		case 1:
			return transcript.WriteAsciicast(o.Out, sessions[0])
		default:
			return UsageError("the transcript has %d exec sessions: give --out-dir DIR for one file each, or --session AUDITID", len(sessions))
		}
	}
	if err := os.MkdirAll(o.OutDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", o.OutDir, err)
	}
	for _, s := range sessions {
		var b bytes.Buffer
		if err := transcript.WriteAsciicast(&b, s); err != nil {
			return err
		}
		name := filepath.Join(o.OutDir, safeFileName(s.AuditID)+".cast")
		// Exec output can hold anything the run printed: owner-only.
		if err := os.WriteFile(name, b.Bytes(), 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		fmt.Fprintln(o.ErrOut, name)
	}
	return nil
}

func safeFileName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			return r
		}
		return '_'
	}, s)
}

// ---- push

// TranscriptPushOptions are the options of `transcript push`.
type TranscriptPushOptions struct {
	g      *GlobalOptions
	deps   TranscriptDeps
	Dir    string
	Files  []string
	Remove bool
	genericiooptions.IOStreams
}

func newTranscriptPushCommand(g *GlobalOptions, streams genericiooptions.IOStreams, deps TranscriptDeps) *cobra.Command {
	o := &TranscriptPushOptions{g: g, deps: deps, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "push [FILE...]",
		Short: "Upload spooled transcripts that the broker has not fully received",
		Long: `Runs spool their transcripts under the cache directory and stream them to the broker as they go.
When the broker was unreachable, push sends what it is missing (uploads are idempotent: sending a
line twice is harmless). Without FILE arguments it pushes every *.transcript.jsonl in --dir.`,
		Example: `  kubectl agent transcript push --broker https://broker.example.com
  kubectl agent transcript push ~/.cache/kubectl-agent/transcripts/4f1c....transcript.jsonl --remove`,
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.Dir, "dir", "", "spool directory (default: transcripts/ in the session cache folder, where exec spools)")
	cmd.Flags().BoolVar(&o.Remove, "remove", false, "delete each sealed transcript once the broker holds all of it")
	return cmd
}

// Complete finds the files.
func (o *TranscriptPushOptions) Complete(args []string) error {
	o.Files = args
	if len(args) > 0 {
		return nil
	}
	if o.Dir == "" {
		// Where exec spools: beside the session cache ($KUBECACHEDIR,
		// the CI job's temporary folder, or ~/.kube/cache).
		d, err := session.DefaultCacheDir(os.Getenv)
		if err != nil {
			return err
		}
		o.Dir = filepath.Join(d, "transcripts")
	}
	m, err := filepath.Glob(filepath.Join(o.Dir, "*.transcript.jsonl"))
	if err != nil {
		return err
	}
	sort.Strings(m)
	o.Files = m
	return nil
}

// Validate checks that an uploader is wired.
func (o *TranscriptPushOptions) Validate() error {
	if o.deps.NewUploader == nil {
		return &ExitError{Code: ExitFailure, Err: errors.New("transcript push needs a broker client, which this build does not have")}
	}
	return nil
}

// Run uploads.
func (o *TranscriptPushOptions) Run(ctx context.Context) error {
	u := ui.New(o.ErrOut)
	if len(o.Files) == 0 {
		u.OK("no spooled transcripts in %s", o.Dir)
		return nil
	}
	failed := 0
	for _, path := range o.Files {
		n, sealed, err := o.push(ctx, path)
		if err != nil {
			failed++
			u.Fail("%s: %v", path, err)
			continue
		}
		u.OK("%s: the broker holds all %d lines", path, n)
		if o.Remove && sealed {
			if err := os.Remove(path); err != nil {
				u.Warn("removing %s: %v", path, err)
			}
		}
	}
	if failed > 0 {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("%d of %d transcripts were not pushed", failed, len(o.Files))}
	}
	return nil
}

func (o *TranscriptPushOptions) push(ctx context.Context, path string) (int, bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false, err
	}
	var lines []string
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.HasSuffix(l, "\n") { // a torn last line is not sent
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
	}
	if len(lines) == 0 {
		return 0, false, errors.New("empty transcript")
	}
	var first transcript.Event
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.Start == nil {
		return 0, false, errors.New("the first line is not a start event")
	}
	up, err := o.deps.NewUploader(ctx, o.g, *first.Start)
	if err != nil {
		return 0, false, err
	}
	const chunk = 500
	var next int64
	var ack api.TranscriptAck
	for next < int64(len(lines)) {
		end := min(next+chunk, int64(len(lines)))
		ack, err = up.Upload(ctx, api.TranscriptChunk{FirstSeq: next, Lines: lines[next:end]})
		if err != nil {
			return 0, false, fmt.Errorf("uploading lines %d-%d: %w", next+1, end, err)
		}
		if ack.NextSeq <= next && ack.NextSeq < end {
			if ack.NextSeq < next {
				next = ack.NextSeq // the broker wants older lines
				continue
			}
			return 0, false, fmt.Errorf("the broker accepted no lines from line %d", next+1)
		}
		next = ack.NextSeq
	}
	return len(lines), ack.Sealed, nil
}

// ---- list / get

func newTranscriptListCommand(g *GlobalOptions, streams genericiooptions.IOStreams, deps TranscriptDeps) *cobra.Command {
	var (
		output string
		f      TranscriptFilter
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List transcripts stored at the broker",
		Long: `List the transcripts the broker holds. A run (one session) has one transcript per
kubectl agent exec. You read them with your own cluster identity, as approval reviewers do: the
bearer token of your current kubeconfig context goes to the broker, which checks it with a
TokenReview at each of its clusters and lists the transcripts of clusters where RBAC lets you
list transcripts.kubectl-agent.io.`,
		Example: `  # Yesterday's runs of one repository that had a denied request
  kubectl agent transcript list --broker https://broker.example.com --repository acme/web --since 24h --decision deny

  # The transcripts of one run, as JSON
  kubectl agent transcript list --broker https://broker.example.com --run 8123456789 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateOutput(output, "json", "yaml"); err != nil {
				return err
			}
			switch f.Decision {
			case "", "allow", "deny", "approve":
			default:
				return UsageError("--decision %q: use allow, deny or approve", f.Decision)
			}
			c, err := transcriptClient(cmd.Context(), g, deps)
			if err != nil {
				return err
			}
			list, err := c.ListTranscripts(cmd.Context(), f)
			if err != nil {
				return fmt.Errorf("listing transcripts: %w", err)
			}
			if list == nil {
				list = []api.TranscriptSummary{}
			}
			if done, err := printData(streams.Out, output, api.TranscriptList{Transcripts: list}); done {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintln(streams.ErrOut, "No transcripts you may list match.")
				return nil
			}
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TRANSCRIPT\tCLUSTER\tRUN\tSTARTED\tLINES\tSTATE\tALLOWED\tDENIED")
			for _, t := range list {
				state := "open"
				switch {
				case t.Sealed:
					state = "sealed"
				case t.Unsealed:
					state = "unsealed"
				}
				allowed, denied := "-", "-"
				if t.Counts != nil {
					allowed, denied = fmt.Sprint(t.Counts["allowed"]), fmt.Sprint(t.Counts["denied"])
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", transcriptRef(t.Session, t.Transcript), clean(t.Cluster),
					clean(strings.TrimSpace(t.Repository+" "+t.Run)), t.CreatedAt.Local().Format(time.DateTime), t.Lines, state, allowed, denied)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&output, "output", "o", "", "output format: json or yaml")
	fl.StringVar(&f.Repository, "repository", "", "only runs of this repository (e.g. acme/web)")
	fl.StringVar(&f.Run, "run", "", "only this CI run id")
	fl.StringVar(&f.Cluster, "cluster-name", "", "only sessions of this broker cluster")
	fl.StringVar(&f.Session, "session", "", "only this session's transcripts")
	fl.StringVar(&f.Since, "since", "", "only sessions started at or after this time (RFC 3339, or a duration back from now: 24h)")
	fl.StringVar(&f.Until, "until", "", "only sessions started before this time (RFC 3339 or a duration back from now)")
	fl.StringVar(&f.Decision, "decision", "", "only transcripts holding a request with this decision: allow, deny or approve")
	return cmd
}

// transcriptRef names a transcript as list prints it and get takes it:
// SESSION/TRANSCRIPT, or SESSION/- for a session's transcript from before
// transcripts had ids.
func transcriptRef(session, transcriptID string) string {
	if transcriptID == "" {
		transcriptID = "-"
	}
	return session + "/" + transcriptID
}

func newTranscriptGetCommand(g *GlobalOptions, streams genericiooptions.IOStreams, deps TranscriptDeps) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get SESSION/TRANSCRIPT | SESSION",
		Short: "Download a transcript stored at the broker",
		Long: `Download one transcript's JSON lines, as the broker holds them, to stdout or --out FILE (0600;
it must not exist). Name it as transcript list prints it (SESSION/TRANSCRIPT); a session id alone
works when the session has one transcript. Check what you got with transcript verify.`,
		Example: `  kubectl agent transcript get 4f1c.../9a0b1c2d3e4f --broker https://broker.example.com --out run.transcript.jsonl
  kubectl agent transcript verify run.transcript.jsonl --jwks https://broker.example.com/.well-known/jwks.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			sessionID, tid, named := strings.Cut(args[0], "/")
			if sessionID == "" || strings.Contains(tid, "/") || (named && tid == "") {
				return UsageError("%q: name a transcript as SESSION/TRANSCRIPT (see kubectl agent transcript list)", args[0])
			}
			if tid == "-" {
				tid = ""
			}
			c, err := transcriptClient(ctx, g, deps)
			if err != nil {
				return err
			}
			if !named {
				list, err := c.ListTranscripts(ctx, TranscriptFilter{Session: sessionID})
				if err != nil {
					return fmt.Errorf("listing the transcripts of session %s: %w", sessionID, err)
				}
				switch len(list) {
				case 0:
					return fmt.Errorf("session %s has no transcript you may read", sessionID)
				case 1:
					tid = list[0].Transcript
				default:
					var refs []string
					for _, t := range list {
						refs = append(refs, transcriptRef(t.Session, t.Transcript))
					}
					return UsageError("session %s has %d transcripts; name one: %s", sessionID, len(list), strings.Join(refs, ", "))
				}
			}
			b, err := c.GetTranscript(ctx, sessionID, tid)
			if err != nil {
				return fmt.Errorf("fetching transcript %s: %w", transcriptRef(sessionID, tid), err)
			}
			if out == "" {
				_, err = streams.Out.Write(b)
				return err
			}
			fh, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("writing the transcript: %w", err)
			}
			if _, err := fh.Write(b); err != nil {
				fh.Close()
				return fmt.Errorf("writing the transcript: %w", err)
			}
			return fh.Close()
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write to this file (0600, must not exist) instead of stdout")
	return cmd
}

func transcriptClient(ctx context.Context, g *GlobalOptions, deps TranscriptDeps) (TranscriptClient, error) {
	if deps.NewClient == nil {
		return nil, &ExitError{Code: ExitFailure, Err: errors.New("this command needs a broker client, which this build does not have")}
	}
	return deps.NewClient(ctx, g)
}
