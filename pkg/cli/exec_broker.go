package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/credential"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/session"
)

// brokerUpstream is exec's upstream in broker mode: the run's session (the
// one the credential plugin shares, from the same cache), its cluster
// credential, refreshed as it nears expiry, and the grant's policy.
func (o *ExecOptions) brokerUpstream(ctx context.Context) (*Upstream, error) {
	s := resolveSessionSettings(o.g, o.Getenv, credential.Config{})
	if err := s.validate("kubectl agent exec --broker"); err != nil {
		return nil, err
	}
	m, err := newSessionManager(s, o.Getenv)
	if err != nil {
		return nil, err
	}
	cred, e, err := m.Credential(ctx)
	if err != nil {
		return nil, fmt.Errorf("getting the run's session from %s: %w", s.Broker, err)
	}
	server, ca := cred.Server, cred.CAData
	if server == "" {
		clusters, err := m.Client.Clusters(ctx)
		if err != nil {
			return nil, fmt.Errorf("looking up cluster %q at the broker: %w", s.Cluster, err)
		}
		for _, c := range clusters.Clusters {
			if c.Name == s.Cluster {
				server, ca = c.Server, c.CAData
			}
		}
		if server == "" {
			return nil, fmt.Errorf("the broker does not list cluster %q (kubectl agent kubeconfig --broker %s lists them)", s.Cluster, s.Broker)
		}
	}
	var base *policy.Policy
	if e.Session.Policy != "" {
		base, err = policy.Parse([]byte(e.Session.Policy), "the broker's policy for rule "+e.Session.Grant.Rule)
		if err != nil {
			return nil, fmt.Errorf("the broker's policy does not load: %w", err)
		}
	}
	ns := ""
	if o.g.ConfigFlags.Namespace != nil {
		ns = *o.g.ConfigFlags.Namespace
	}
	if ns == "" && len(e.Session.Grant.Namespaces) > 0 {
		ns = e.Session.Grant.Namespaces[0]
	}
	if ns == "" {
		ns = "default"
	}
	var facts map[string]any
	if b, err := json.Marshal(struct {
		api.Identity
		ID      string    `json:"id"`
		Cluster string    `json:"cluster"`
		Grant   api.Grant `json:"grant"`
	}{e.Session.Identity, e.Session.ID, e.Session.Cluster, e.Session.Grant}); err == nil {
		_ = json.Unmarshal(b, &facts)
	}
	tokens := &sessionBearer{m: m, cur: cred}
	client := m.SessionClient(e)
	return &Upstream{
		Config: &rest.Config{
			Host:            server,
			TLSClientConfig: rest.TLSClientConfig{CAData: ca},
			WrapTransport:   tokens.wrap,
			QPS:             -1, // the child's own client-side limits apply; don't add ours
		},
		BasePolicy: base,
		Cluster:    s.Cluster,
		Namespace:  ns,
		Mode:       "broker",
		SessionID:  e.Session.ID,
		Key:        e.PrivateKey(),
		KeyBinding: e.Session.KeyBinding,
		Session:    facts,
		Identity:   identityMap(e.Session.Identity),
		Grant:      e.Session.Grant,
		Client:     client,
		BrokerURL:  s.Broker,
	}, nil
}

// identityMap is the run's identity as the transcript's start event holds it.
func identityMap(id api.Identity) map[string]string {
	out := map[string]string{"issuer": id.Issuer, "subject": id.Subject}
	for k, v := range map[string]string{
		"repository": id.Repository, "runID": id.RunID, "runAttempt": id.RunAttempt, "ref": id.Ref,
		"workflow": id.Workflow, "environment": id.Environment, "job": id.Job,
	} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// sessionBearer puts the session's current cluster token on every upstream
// request (the upgrade path too: client-go applies WrapTransport there),
// refreshing it at the broker shortly before it expires.
type sessionBearer struct {
	m   *session.Manager
	mu  sync.Mutex
	cur *api.Credential
}

func (b *sessionBearer) token(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil && time.Until(b.cur.ExpiresAt) > time.Minute {
		return b.cur.Token, nil
	}
	c, _, err := b.m.Credential(ctx)
	if err != nil {
		return "", fmt.Errorf("refreshing the cluster credential: %w", err)
	}
	b.cur = c
	return c.Token, nil
}

func (b *sessionBearer) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		tok, err := b.token(r.Context())
		if err != nil {
			return nil, err // fail closed: no credential, no request
		}
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tok)
		return rt.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
