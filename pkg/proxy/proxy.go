// Package proxy is kubectl-agent's loopback API proxy: the only way the
// wrapped command reaches the cluster. It serves HTTPS on 127.0.0.1 with an
// ephemeral CA and a random bearer token, and for every request it
//
//  1. refuses paths the apiserver could read differently (400),
//  2. derives the request's authorization attributes (policy.ParsePath plus
//     the Impersonate-* headers) and evaluates the policy: deny answers 403
//     with a metav1.Status, approve holds the request for the Approver (none:
//     403), allow forwards it,
//  3. forwards it upstream with the run's own credential (client-go's
//     transport, so any kubeconfig auth works) and a fresh Audit-ID, after
//     dropping the child's Authorization header,
//  4. masks the response (pkg/mask) as it streams back: lists item by item,
//     watches event by event,
//  5. records one transcript.TypeRequest event.
//
// Exec, attach and port-forward upgrades (WebSocket and SPDY) are dialed
// upstream by hand and then copied byte for byte both ways; a StreamTap sees a
// copy of every byte and can never change one.
//
// Content types: the proxy always asks upstream for JSON for resource
// requests (keeping the as=Table / as=PartialObjectMetadata parameters), never
// protobuf or CBOR, and lets Go's transport undo gzip, so that it can parse
// every response it must mask; a resource response in any other type or
// encoding, or with a content type that does not parse (except pods/log text
// and */proxy subresources, which are passed through) is refused with 502. Request bodies must be JSON, YAML or a JSON/YAML patch
// type. A protobuf body (kubectl sends one for `create namespace`, client-go
// for typed clients that ask for it) is converted to JSON with client-go's
// scheme before it is inspected, and forwarded as that JSON; protobuf of a
// type the scheme does not know, CBOR and anything else are refused with 415,
// because the proxy would otherwise forward bytes it has not inspected.
//
// Recording: a denied or refused request is recorded before the answer is
// written. An allowed one is recorded after its response (stage
// ResponseComplete; an upgraded stream at stage ResponseStarted, when the
// upstream said 101, before any stream byte moves; a watch both when it
// starts and when it ends). With RequireRecording, an
// allowed request is also recorded before it is forwarded (stage
// RequestReceived), and when that fails the request is refused with 503 and
// never reaches the cluster.
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

// Approver decides requests that the policy holds for a human. It blocks
// until a decision (or ctx ends) and returns Allow or Deny.
type Approver interface {
	Approve(ctx context.Context, req *HeldRequest) (policy.Decision, error)
}

// HeldRequest is a request waiting for approval.
type HeldRequest struct {
	AuditID    string
	Method     string
	RequestURI string
	Header     http.Header // the child's headers, without Authorization
	Attributes policy.Attributes
	Decision   policy.Decision // the policy's approve decision (rule, message)
	// Body is the request body as the child sent it; Object is it decoded
	// (nil when it is not a JSON/YAML object).
	Body   []byte
	Object map[string]any
}

// StreamTap sees the bytes of upgraded streams (exec, attach, port-forward).
// Open is called once per stream when the upstream has switched protocols;
// the writers get copies of the bytes going each way (either may be nil).
// Write errors are ignored and the bytes are never altered; writers that are
// io.Closers are closed when the stream ends.
type StreamTap interface {
	Open(auditID, protocol string) (toUpstream, toClient io.Writer)
}

// Outcome is what happened to one request, for the caller's display.
type Outcome struct {
	AuditID    string
	Method     string
	Path       string
	Attributes policy.Attributes
	Decision   policy.Decision
	Code       int // HTTP status returned to the child (0 while a stream runs)
}

// Options configure a Proxy.
type Options struct {
	// Upstream is where allowed requests go, with the run's credential.
	Upstream *rest.Config
	// Policy decides every request; nil means policy.Default().
	Policy *policy.Policy
	// Session is passed to the policy's CEL as `session`.
	Session map[string]any
	// Sink records one event per request; nil records nothing.
	Sink transcript.Sink
	// RequireRecording refuses (503) any request that cannot be recorded
	// before it is forwarded.
	RequireRecording bool
	// Approver decides held requests; nil denies them.
	Approver Approver
	// Tap sees upgraded stream bytes; nil is fine.
	Tap StreamTap
	// Notify is called once per request with its outcome (from the request's
	// goroutine; keep it quick).
	Notify func(Outcome)
	// MaxRecordedBody caps each body kept in the transcript (0: 64 KiB).
	MaxRecordedBody int
	// MaxRequestBody caps request bodies, which are buffered to be checked
	// and recorded (0: 16 MiB; the apiserver's own limit is 3 MiB).
	MaxRequestBody int64
}

// Counts are the proxy's running totals.
type Counts struct {
	Allowed int64 `json:"allowed"`
	Denied  int64 `json:"denied"`
	Masked  int64 `json:"masked"` // objects with masked values
	Errors  int64 `json:"errors"`
}

// Proxy is a running loopback proxy.
type Proxy struct {
	opts      Options
	policy    *policy.Policy
	masker    *mask.Masker
	transport http.RoundTripper
	upstream  *url.URL
	upgrade   *upgrader

	token  string
	caPEM  []byte
	cert   tls.Certificate
	ln     net.Listener
	server *http.Server

	allowed, denied, masked, errs atomic.Int64
	protobuf                      protobufCodec
}

// New prepares a proxy; Start makes it listen.
func New(opts Options) (*Proxy, error) {
	if opts.Upstream == nil {
		return nil, errors.New("proxy: no upstream configuration")
	}
	if opts.Policy == nil {
		opts.Policy = policy.Default()
	}
	if opts.MaxRecordedBody <= 0 {
		opts.MaxRecordedBody = 64 << 10
	}
	if opts.MaxRequestBody <= 0 {
		opts.MaxRequestBody = 16 << 20
	}
	up, err := upstreamURL(opts.Upstream.Host)
	if err != nil {
		return nil, err
	}
	rt, err := rest.TransportFor(opts.Upstream)
	if err != nil {
		return nil, fmt.Errorf("building the upstream transport: %w", err)
	}
	ug, err := newUpgrader(opts.Upstream, up)
	if err != nil {
		return nil, err
	}
	var rules []mask.Rule
	for _, r := range opts.Policy.Mask() {
		rules = append(rules, mask.Rule{Kinds: r.Kinds, Keys: r.Keys})
	}
	caPEM, cert, err := ephemeralTLS(7 * 24 * time.Hour)
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("generating proxy token: %w", err)
	}
	return &Proxy{
		opts: opts, policy: opts.Policy, masker: mask.New(rules), transport: rt, upstream: up, upgrade: ug,
		token: base64.RawURLEncoding.EncodeToString(tok), caPEM: caPEM, cert: cert,
	}, nil
}

func upstreamURL(host string) (*url.URL, error) {
	if host == "" {
		return nil, errors.New("proxy: the upstream configuration has no server")
	}
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream server %q: %w", host, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Start listens on 127.0.0.1 (a free port) and serves until Close or ctx ends.
func (p *Proxy) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("starting the proxy: %w", err)
	}
	p.ln = ln
	p.server = &http.Server{
		Handler: p,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{p.cert},
			MinVersion:   tls.VersionTLS12,
			// HTTP/1.1 only: upgrades (SPDY, WebSocket) need it.
			NextProtos: []string{"http/1.1"},
		},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          nil,
	}
	go func() { _ = p.server.ServeTLS(ln, "", "") }()
	go func() {
		<-ctx.Done()
		_ = p.server.Close()
	}()
	return nil
}

// Close stops the proxy at once (streams included).
func (p *Proxy) Close() error {
	if p.server == nil {
		return nil
	}
	return p.server.Close()
}

// URL is the proxy's https://127.0.0.1:PORT address.
func (p *Proxy) URL() string { return "https://" + p.ln.Addr().String() }

// CAData is the PEM certificate of the proxy's ephemeral CA.
func (p *Proxy) CAData() []byte { return append([]byte(nil), p.caPEM...) }

// Token is the bearer token the child must present.
func (p *Proxy) Token() string { return p.token }

// Counts returns the running totals.
func (p *Proxy) Counts() Counts {
	return Counts{Allowed: p.allowed.Load(), Denied: p.denied.Load(), Masked: p.masked.Load(), Errors: p.errs.Load()}
}

// Kubeconfig is a kubeconfig that points at the proxy, with namespace as the
// context's namespace.
func (p *Proxy) Kubeconfig(namespace string) *clientcmdapi.Config {
	c := clientcmdapi.NewConfig()
	c.Clusters["kubectl-agent"] = &clientcmdapi.Cluster{Server: p.URL(), CertificateAuthorityData: p.CAData()}
	c.AuthInfos["kubectl-agent"] = &clientcmdapi.AuthInfo{Token: p.token}
	c.Contexts["kubectl-agent"] = &clientcmdapi.Context{Cluster: "kubectl-agent", AuthInfo: "kubectl-agent", Namespace: namespace}
	c.CurrentContext = "kubectl-agent"
	return c
}

// RESTConfig is a client-go configuration that talks to the proxy.
func (p *Proxy) RESTConfig() *rest.Config {
	return &rest.Config{Host: p.URL(), BearerToken: p.token, TLSClientConfig: rest.TLSClientConfig{CAData: p.CAData()}}
}

func (p *Proxy) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(p.token)) == 1
}
