// Package server is agent-broker's HTTP API: the RFC 8693 token exchange that
// turns a verified pipeline OIDC token into a per-run session, DPoP-bound
// session calls (read, refresh the cluster credential, end), the cluster list,
// the JWKS, health, readiness and metrics; plus the reconciler that removes
// cluster access of sessions that are no longer live, and the cobra commands
// of the agent-broker binary.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/keys"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/trust"
	"github.com/kubectl-agent/kubectl-agent/pkg/tlog"
)

// Limits of requests.
const (
	MaxFormBytes = 64 << 10 // token endpoint body
	MaxJSONBytes = 4 << 20  // session call bodies (transcript chunks)
	// ProofMaxAge is how old a DPoP proof may be.
	ProofMaxAge = time.Minute
)

// Options configure a Server.
type Options struct {
	Config *config.Config
	Store  store.Store
	// Backends by cluster name; every configured cluster needs one.
	Backends map[string]backend.Backend
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// HTTPClient fetches issuer discovery documents and keys.
	HTTPClient *http.Client
	// TranscriptReaders checks people reading transcripts (audit queries);
	// nil: made on first use from the clusters' credentials (KubeReaders).
	TranscriptReaders TranscriptReaders
	// Registerer receives the broker's metrics (default: a fresh registry,
	// served at /metrics).
	Registry *prometheus.Registry
}

// Server is one broker. Several may share one store.
type Server struct {
	cfg      *config.Config
	st       store.Store
	backends map[string]backend.Backend
	log      *slog.Logger
	now      func() time.Time
	verifier *trust.Verifier
	keys     *keys.Manager
	reg      *prometheus.Registry
	m        metrics
	tlog     *tlog.Log
	logKey   string
	ingest   ingest
	readers  lazyReaders
	mounts   []mount
}

type mount struct {
	patterns []string
	h        http.Handler
}

// Mount serves h at patterns (http.ServeMux patterns) next to the broker's
// own routes, behind the same logging; approvals use it. Call it before
// Handler or Serve.
func (s *Server) Mount(patterns []string, h http.Handler) {
	s.mounts = append(s.mounts, mount{patterns, h})
}

type metrics struct {
	exchanges *prometheus.CounterVec
	active    prometheus.Gauge
	backend   *prometheus.HistogramVec
	reconcile *prometheus.CounterVec
}

// New makes a server and loads (or makes) the broker signing keys.
func New(ctx context.Context, o Options) (*Server, error) {
	if o.Config == nil || o.Store == nil {
		return nil, errors.New("server: config and store are required")
	}
	for _, c := range o.Config.Clusters {
		if o.Backends[c.Name] == nil {
			return nil, fmt.Errorf("server: no backend for cluster %q", c.Name)
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	s := &Server{
		cfg: o.Config, st: o.Store, backends: o.Backends, log: o.Logger, now: o.Now, reg: o.Registry,
		verifier: trust.NewVerifier(o.Config, trust.Options{HTTPClient: o.HTTPClient, Now: o.Now}),
		keys:     keys.New(o.Store, o.Config.PublicURL, o.Config.KeyRotation(), o.Now),
	}
	s.readers.r = o.TranscriptReaders
	s.m = metrics{
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_broker_exchanges_total",
			Help: "Token exchanges by result (new, repeat, or the RFC 6749 error code)."}, []string{"result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agent_broker_active_sessions",
			Help: "Sessions neither ended nor expired, as of the last reconcile."}),
		backend: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agent_broker_backend_seconds",
			Help: "Latency of backend calls.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"cluster", "op", "result"}),
		reconcile: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_broker_reconciles_total",
			Help: "Reconcile passes by result."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{s.m.exchanges, s.m.active, s.m.backend, s.m.reconcile} {
		if err := s.reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	if err := s.keys.Load(ctx); err != nil {
		return nil, err
	}
	var err error
	if s.tlog, s.logKey, err = openLog(ctx, o.Store, o.Config.PublicHost()); err != nil {
		return nil, err
	}
	return s, nil
}

// Keys is the signing key manager (tests and tools verify with it).
func (s *Server) Keys() *keys.Manager { return s.keys }

// Handler is the broker's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathToken, s.handleToken)
	mux.HandleFunc("GET "+api.PathClusters, s.handleClusters)
	mux.HandleFunc("GET "+api.PathJWKS, s.handleJWKS)
	mux.HandleFunc("GET "+api.PathSession, s.session(s.handleGetSession))
	mux.HandleFunc("DELETE "+api.PathSession, s.session(s.handleEndSession))
	mux.HandleFunc("POST "+api.PathSessionCredential, s.session(s.handleCredential))
	mux.HandleFunc("POST "+api.PathSessionTranscript, s.session(s.handleTranscript))
	mux.HandleFunc("GET "+api.PathSessionTranscript, s.session(s.handleTranscript))
	mux.HandleFunc("GET "+PathTranscriptLog, s.handleTranscriptLog)
	mux.HandleFunc("GET "+api.PathTranscripts, s.handleAuditList)
	mux.HandleFunc("GET "+api.PathTranscriptLines, s.handleAuditGet)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	for _, m := range s.mounts {
		for _, p := range m.patterns {
			mux.Handle(p, m.h)
		}
	}
	return s.middleware(mux)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// middleware logs each request (never headers or bodies: they carry tokens)
// and turns panics into 500s.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeError(sw, http.StatusInternalServerError, &api.Error{Code: trust.CodeServerError, Description: "internal error"})
				}
			}
			if r.URL.Path == "/healthz" || r.URL.Path == "/metrics" {
				return
			}
			s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "ms", time.Since(start).Milliseconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

func (s *Server) handleClusters(w http.ResponseWriter, r *http.Request) {
	out := api.ClusterList{Clusters: []api.Cluster{}}
	for _, c := range s.cfg.Clusters {
		out.Clusters = append(out.Clusters, api.Cluster{Name: c.Name, Server: c.Server, CAData: c.CAData})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_ = json.NewEncoder(w).Encode(s.keys.JWKS())
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	problems := map[string]string{}
	if err := s.st.Ping(ctx); err != nil {
		problems["store"] = err.Error()
	}
	for name, b := range s.backends {
		if err := b.Ready(ctx); err != nil {
			problems["cluster/"+name] = err.Error()
		}
	}
	if len(problems) > 0 {
		// Details go to the log only: the endpoint is unauthenticated.
		s.log.Warn("not ready", "problems", problems)
		failing := make([]string, 0, len(problems))
		for k := range problems {
			failing = append(failing, k)
		}
		sort.Strings(failing)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "failing": failing})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, e *api.Error) {
	writeJSON(w, status, e)
}

// timed runs a backend call and records its latency.
func (s *Server) timed(cluster, op string, f func() error) error {
	start := time.Now()
	err := f()
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.m.backend.WithLabelValues(cluster, op, result).Observe(time.Since(start).Seconds())
	return err
}
