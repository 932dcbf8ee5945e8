package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-agent/kubectl-agent/pkg/broker/approvals"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/buildinfo"
)

// Exit codes of agent-broker.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

type usageError struct{ error }

// Execute runs agent-broker with args and returns its exit code.
func Execute(ctx context.Context, streams genericiooptions.IOStreams, args []string) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(streams.ErrOut, "error: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitFailure
}

// NewCommand is the agent-broker root command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	root := &cobra.Command{
		Use:   "agent-broker",
		Short: "Exchange CI pipeline OIDC tokens for per-run, narrowly scoped cluster credentials",
		Long: `agent-broker verifies a pipeline run's OIDC token, matches it against trust rules, and gives the
run one session with a short-lived cluster credential that can do exactly what the rule grants.`,
		Example: `  # Check a configuration file
  agent-broker check-config --config broker.yaml

  # Serve
  agent-broker serve --config broker.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(streams), newCheckConfigCommand(streams), newVersionCommand(streams))
	return root
}

// ServeOptions are the flags of `agent-broker serve`.
type ServeOptions struct {
	ConfigFile   string
	Listen       string
	InsecureHTTP bool
	LogLevel     string

	cfg *config.Config
	genericiooptions.IOStreams
}

func newServeCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &ServeOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Serve the broker API",
		Example: `  agent-broker serve --config /etc/agent-broker/broker.yaml
  agent-broker serve --config broker.yaml --listen 127.0.0.1:8443`,
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
	cmd.Flags().StringVar(&o.ConfigFile, "config", "", "broker configuration file (kind BrokerConfig)")
	cmd.Flags().StringVar(&o.Listen, "listen", "", "address to listen on (overrides the file's listen)")
	cmd.Flags().BoolVar(&o.InsecureHTTP, "insecure-http", false, "allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy only)")
	cmd.Flags().StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// Complete loads the config file and applies the flags.
func (o *ServeOptions) Complete() error {
	if o.ConfigFile == "" {
		return usageError{config.ErrNoConfig}
	}
	cfg, err := config.Load(o.ConfigFile)
	if err != nil {
		return err
	}
	if o.Listen != "" {
		cfg.Listen = o.Listen
	}
	if o.InsecureHTTP {
		cfg.AllowInsecureHTTP = true
	}
	o.cfg = cfg
	return nil
}

// Validate checks the flags.
func (o *ServeOptions) Validate() error {
	if err := config.CheckListen(o.cfg.Listen, o.cfg.TLS != nil, o.cfg.AllowInsecureHTTP); err != nil {
		return usageError{err}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", o.LogLevel)}
	}
	return nil
}

// Run serves until ctx ends.
func (o *ServeOptions) Run(ctx context.Context) error {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.LogLevel))
	log := slog.New(slog.NewJSONHandler(o.ErrOut, &slog.HandlerOptions{Level: lvl}))
	st, err := store.Open(ctx, o.cfg.Store.URL)
	if err != nil {
		return err
	}
	defer st.Close()
	backends, err := BuildBackends(ctx, o.cfg)
	if err != nil {
		return err
	}
	srv, err := New(ctx, Options{Config: o.cfg, Store: st, Backends: backends, Logger: log})
	if err != nil {
		return err
	}
	// Approvals: the trust rules' approval settings, reviewer checks with the
	// broker's cluster credentials, reviewer web sign-in from the
	// AGENT_BROKER_OIDC_* environment (off when unset).
	ah, err := approvals.FromBroker(ctx, approvals.BrokerOptions{Config: o.cfg, Store: st, Keys: srv.Keys(), Logger: log})
	if err != nil {
		return fmt.Errorf("setting up approvals: %w", err)
	}
	srv.Mount(approvals.Routes(), ah)
	ln, err := net.Listen("tcp", o.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.cfg.Listen, err)
	}
	return srv.Serve(ctx, ln)
}

// Serve serves the API on ln (with TLS when configured) and runs the
// reconciler, until ctx ends; then it shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if t := s.cfg.TLS; t != nil {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Maintain(mctx, s.cfg.ReconcileEvery())
	}()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("agent-broker serving", "listen", ln.Addr().String(), "publicURL", s.cfg.PublicURL, "version", buildinfo.Get().Version)
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = hs.Shutdown(sctx)
		cancel()
	}
	stop()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// CheckConfigOptions are the flags of `agent-broker check-config`.
type CheckConfigOptions struct {
	ConfigFile string
	Output     string
	genericiooptions.IOStreams
}

func newCheckConfigCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &CheckConfigOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "check-config --config FILE",
		Short: "Check a broker configuration file without serving",
		Example: `  agent-broker check-config --config broker.yaml
  agent-broker check-config --config broker.yaml -o json   # the file as the broker understands it`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	cmd.Flags().StringVar(&o.ConfigFile, "config", "", "broker configuration file")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "print the checked configuration, with defaults filled in: json or yaml")
	return cmd
}

// Validate checks the flags.
func (o *CheckConfigOptions) Validate() error {
	if o.ConfigFile == "" {
		return usageError{config.ErrNoConfig}
	}
	if o.Output != "" && o.Output != "json" && o.Output != "yaml" {
		return usageError{fmt.Errorf("unknown output format %q: use json or yaml", o.Output)}
	}
	return nil
}

// Run checks the file.
func (o *CheckConfigOptions) Run() error {
	cfg, err := config.Load(o.ConfigFile)
	if err != nil {
		return err
	}
	// The store URL may hold a database password.
	if u, err := url.Parse(cfg.Store.URL); err == nil {
		cfg.Store.URL = u.Redacted()
	}
	switch o.Output {
	case "json":
		b, _ := json.MarshalIndent(cfg, "", "  ")
		_, err = fmt.Fprintf(o.Out, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(cfg)
		if err != nil {
			return err
		}
		_, err = o.Out.Write(b)
		return err
	}
	_, err = fmt.Fprintf(o.Out, "%s: ok (%d issuers, %d clusters, %d trust rules)\n", o.ConfigFile, len(cfg.Issuers), len(cfg.Clusters), len(cfg.TrustRules))
	return err
}

func newVersionCommand(streams genericiooptions.IOStreams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of agent-broker",
		Example: "  agent-broker version -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return printVersion(streams.Out, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml")
	return cmd
}

func printVersion(w io.Writer, output string) error {
	info := buildinfo.Get()
	switch output {
	case "json":
		b, _ := json.MarshalIndent(info, "", "  ")
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(info)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "":
		_, err := fmt.Fprintf(w, "agent-broker %s (commit %s, %s)\n", info.Version, info.Commit, info.GoVersion)
		return err
	}
	return usageError{fmt.Errorf("unknown output format %q: use json or yaml", output)}
}
