package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"golang.org/x/oauth2"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/identity"
)

// Manager finds or starts the run's session and keeps its cluster
// credential fresh, sharing both through the Cache among all processes of
// the run.
//
// Cache keys. An entry's key is the sha256 of (broker, cluster, audience,
// run identity from the pipeline token's claims: issuer, repository, run id,
// attempt). When the claims name no run id, the token's own hash stands in,
// so two runs never share an entry. Reading the claims needs the token, and
// on GitHub getting one is an HTTP call; so when the environment identifies
// the run (GITHUB_RUN_ID and friends, see identity.EnvRun) an index file
// keyed by (broker, cluster, audience, that environment) points at the
// entry, and a cache hit then fetches no token and makes no network call.
// The index is only a shortcut: the entry it names still has to match the
// broker, cluster and audience, and not be expired.
//
// Concurrency: lookups read without locking (writes are atomic renames).
// On a miss a process takes the lock of the index (or the entry), looks
// again, and only then exchanges; so N processes of one run make one
// exchange.
type Manager struct {
	Broker, Cluster, Audience string
	Source                    oauth2.TokenSource
	Client                    *Client
	Cache                     *Cache
	// Env reads the environment (for the index key).
	Env func(string) string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RefreshMargin: a credential that expires sooner than this is renewed.
	// Zero means DefaultRefreshMargin (or a third of a short credential's
	// lifetime).
	RefreshMargin time.Duration
}

// DefaultRefreshMargin is more than the minute the ExecCredential takes off
// the expiry, so kubectl never holds a credential that the plugin would
// print again unchanged.
const DefaultRefreshMargin = 2 * time.Minute

// sessionMargin: a session this close to its end is not reused; a new
// exchange (for the same run) is cheaper than a failing kubectl call.
const sessionMargin = 30 * time.Second

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) env(k string) string {
	if m.Env == nil {
		return ""
	}
	return m.Env(k)
}

type scope struct {
	Broker   string `json:"broker"`
	Cluster  string `json:"cluster"`
	Audience string `json:"audience"`
}

func (m *Manager) scope() scope { return scope{m.Client.Broker(), m.Cluster, m.Audience} }

// indexKey is "" when the environment does not identify the run.
func (m *Manager) indexKey() string {
	run := identity.EnvRun(m.env)
	if run == nil {
		return ""
	}
	return hashKey(struct {
		Scope scope             `json:"scope"`
		Env   map[string]string `json:"env"`
	}{m.scope(), run})
}

func (m *Manager) entryKey(run identity.Run, token string) string {
	v := struct {
		Scope     scope        `json:"scope"`
		Run       identity.Run `json:"run"`
		TokenHash string       `json:"tokenHash,omitempty"`
	}{Scope: m.scope(), Run: run}
	if !run.Complete() {
		sum := sha256.Sum256([]byte(token))
		v.TokenHash = hex.EncodeToString(sum[:])
	}
	return hashKey(v)
}

// usable reports whether e is a live session for this manager's scope.
func (m *Manager) usable(e *Entry) bool {
	return e != nil && e.Broker == m.Client.Broker() && e.Cluster == m.Cluster && e.Audience == m.Audience &&
		e.SessionToken != "" && !e.Session.Ended && e.Session.ExpiresAt.After(m.now().Add(sessionMargin))
}

func (m *Manager) fromIndex(idx string) (*Entry, error) {
	key, err := m.Cache.LoadIndex(idx)
	if err != nil || key == "" {
		return nil, err
	}
	e, err := m.Cache.Load(key)
	if err != nil || !m.usable(e) {
		return nil, err
	}
	return e, nil
}

// Lookup returns the cached session without fetching a token when the
// environment identifies the run, else after reading the token's claims;
// nil when there is no usable entry. It never exchanges.
func (m *Manager) Lookup(ctx context.Context) (*Entry, error) {
	if idx := m.indexKey(); idx != "" {
		if e, err := m.fromIndex(idx); err != nil || e != nil {
			return e, err
		}
	}
	tok, run, err := m.token()
	if err != nil {
		return nil, err
	}
	e, err := m.Cache.Load(m.entryKey(run, tok))
	if err != nil || !m.usable(e) {
		return nil, err
	}
	return e, nil
}

func (m *Manager) token() (string, identity.Run, error) {
	if m.Source == nil {
		return "", identity.Run{}, errors.New("no pipeline token source: set --token-source (or KUBECTL_AGENT_TOKEN_SOURCE)")
	}
	t, err := m.Source.Token()
	if err != nil {
		return "", identity.Run{}, fmt.Errorf("getting the pipeline token: %w", err)
	}
	run, err := identity.RunKey(t.AccessToken)
	if err != nil {
		return "", identity.Run{}, fmt.Errorf("reading the pipeline token: %w", err)
	}
	return t.AccessToken, run, nil
}

// Ensure returns the run's session: from the cache when it has a live one,
// else by exchanging the pipeline token (once for all processes of the run).
func (m *Manager) Ensure(ctx context.Context) (*Entry, error) {
	idx := m.indexKey()
	if idx != "" {
		if e, err := m.fromIndex(idx); err != nil || e != nil {
			return e, err
		}
		unlock, err := m.Cache.Lock(ctx, "idx-"+idx)
		if err != nil {
			return nil, err
		}
		defer unlock()
		// Another process may have finished the exchange while we waited.
		if e, err := m.fromIndex(idx); err != nil || e != nil {
			return e, err
		}
	}
	tok, run, err := m.token()
	if err != nil {
		return nil, err
	}
	key := m.entryKey(run, tok)
	e, err := m.Cache.Load(key)
	if err != nil {
		return nil, err
	}
	if !m.usable(e) {
		unlock, err := m.Cache.Lock(ctx, key)
		if err != nil {
			return nil, err
		}
		defer unlock()
		if e, err = m.Cache.Load(key); err != nil {
			return nil, err
		}
		if !m.usable(e) {
			if e, err = m.exchange(ctx, key, run, tok); err != nil {
				return nil, err
			}
		}
	}
	if idx != "" {
		if err := m.Cache.StoreIndex(idx, key); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (m *Manager) exchange(ctx context.Context, key string, run identity.Run, tok string) (*Entry, error) {
	priv, err := m.Cache.RunKey(key)
	if err != nil {
		return nil, err
	}
	resp, err := m.Client.Exchange(ctx, tok, m.Cluster, priv)
	if err != nil {
		return nil, err
	}
	now := m.now()
	e := &Entry{
		Key: key, Broker: m.Client.Broker(), Cluster: m.Cluster, Audience: m.Audience, Run: run,
		SessionToken: resp.AccessToken, SessionKey: priv, Session: resp.Session, CreatedAt: now,
	}
	if e.Session.ExpiresAt.IsZero() && resp.ExpiresIn > 0 {
		e.Session.ExpiresAt = now.Add(time.Duration(resp.ExpiresIn) * time.Second)
	}
	if c := resp.Session.Credential; c != nil && c.Token != "" {
		e.Credential, e.CredentialIssuedAt = c, now
	}
	e.Session.Credential = nil // kept once, in e.Credential
	if err := m.Cache.Store(e); err != nil {
		return nil, err
	}
	return e, nil
}

// fresh reports whether e's credential is good for more than the margin.
func (m *Manager) fresh(e *Entry) bool {
	if e.Credential == nil || e.Credential.Token == "" {
		return false
	}
	margin := m.RefreshMargin
	if margin == 0 {
		margin = DefaultRefreshMargin
		// A short-lived credential would be "stale" from birth with a
		// fixed margin; renew those at two thirds of their life.
		if life := e.Credential.ExpiresAt.Sub(e.CredentialIssuedAt); !e.CredentialIssuedAt.IsZero() && life < 3*margin {
			margin = life / 3
		}
	}
	return e.Credential.ExpiresAt.After(m.now().Add(margin))
}

// Credential returns a cluster credential good for more than the refresh
// margin: the cached one, or a fresh one from the broker. A session the
// broker no longer knows is dropped and a new one started, once.
func (m *Manager) Credential(ctx context.Context) (*api.Credential, *Entry, error) {
	for attempt := 0; ; attempt++ {
		e, err := m.Ensure(ctx)
		if err != nil {
			return nil, nil, err
		}
		if m.fresh(e) {
			return e.Credential, e, nil
		}
		c, e, err := m.refresh(ctx, e.Key)
		if err == nil {
			return c, e, nil
		}
		if !SessionGone(err) || attempt > 0 {
			return nil, nil, err
		}
		if err := m.drop(e); err != nil {
			return nil, nil, err
		}
	}
}

func (m *Manager) refresh(ctx context.Context, key string) (*api.Credential, *Entry, error) {
	unlock, err := m.Cache.Lock(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	e, err := m.Cache.Load(key)
	if err != nil {
		return nil, nil, err
	}
	if e == nil {
		return nil, nil, errors.New("the session cache entry vanished while refreshing (a concurrent logout?); try again")
	}
	if m.fresh(e) {
		return e.Credential, e, nil
	}
	c, err := m.Client.WithSession(e.SessionToken, e.PrivateKey()).Credential(ctx, e.Session.ID)
	if err != nil {
		return nil, e, err
	}
	e.Credential, e.CredentialIssuedAt = c, m.now()
	if err := m.Cache.Store(e); err != nil {
		return nil, nil, err
	}
	return c, e, nil
}

// drop removes an entry and, when it points there, this run's index.
func (m *Manager) drop(e *Entry) error {
	if e == nil {
		return nil
	}
	if idx := m.indexKey(); idx != "" {
		if k, _ := m.Cache.LoadIndex(idx); k == e.Key {
			if err := m.Cache.Remove("idx-" + idx); err != nil {
				return err
			}
		}
	}
	// The session key stays (Cache.RunKey): the broker binds a pipeline
	// token to the first key it sees, and some CI systems (GitLab's
	// id_tokens) give a job one token for its whole life, so a run's next
	// session must be asked for with the same key.
	return m.Cache.Remove(e.Key)
}

// End ends the cached session at the broker and removes it from the cache.
// It returns the ended entry, or nil when there was no session to end. A
// session the broker no longer knows counts as ended.
func (m *Manager) End(ctx context.Context) (*Entry, error) {
	e, err := m.Lookup(ctx)
	if err != nil || e == nil {
		return nil, err
	}
	err = m.Client.WithSession(e.SessionToken, e.PrivateKey()).End(ctx, e.Session.ID)
	if err != nil && !SessionGone(err) {
		return nil, err
	}
	return e, m.drop(e)
}

// SessionClient returns a client bound to e's session.
func (m *Manager) SessionClient(e *Entry) *Client {
	return m.Client.WithSession(e.SessionToken, e.PrivateKey())
}
