package approvals

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// Reviewer is a person deciding approvals, as authenticated by the cluster
// (CLI) or the organization's OIDC provider (web).
type Reviewer struct {
	Name   string              `json:"name"`
	UID    string              `json:"uid,omitempty"`
	Groups []string            `json:"groups,omitempty"`
	Extra  map[string][]string `json:"extra,omitempty"`
	Email  string              `json:"email,omitempty"`
	Via    string              `json:"via"` // "cli" or "web"
}

// Kube checks reviewers against the clusters: TokenReview for who they are,
// SubjectAccessReview for what they may do. Who may approve is plain RBAC.
type Kube struct {
	clients map[string]kubernetes.Interface
	now     func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]cachedReview
}

type cachedReview struct {
	rv  Reviewer
	exp time.Time
}

// tokenCacheTTL bounds how long a TokenReview answer is reused. A reviewer
// polling the list page should not cost a review per request; a revoked
// token keeps working at most this long.
const tokenCacheTTL = 10 * time.Second

// NewKube makes the cluster checks from each cluster's broker credential.
// The broker's ServiceAccount or user needs `create` on
// tokenreviews.authentication.k8s.io and
// subjectaccessreviews.authorization.k8s.io.
func NewKube(clusters map[string]*rest.Config, now func() time.Time) (*Kube, error) {
	if now == nil {
		now = time.Now
	}
	k := &Kube{clients: map[string]kubernetes.Interface{}, now: now, cache: map[[32]byte]cachedReview{}}
	for name, rc := range clusters {
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: making a client for reviewer checks: %w", name, err)
		}
		k.clients[name] = cs
	}
	return k, nil
}

// Clusters lists the cluster names, sorted.
func (k *Kube) Clusters() []string {
	out := make([]string, 0, len(k.clients))
	for n := range k.clients {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// errUnauthenticated: the token is not valid at that cluster.
var errUnauthenticated = errors.New("the token is not valid at this cluster")

// Authenticate runs a TokenReview of a reviewer's bearer token at a cluster.
func (k *Kube) Authenticate(ctx context.Context, cluster, token string) (Reviewer, error) {
	cs, ok := k.clients[cluster]
	if !ok {
		return Reviewer{}, fmt.Errorf("no credentials for cluster %q to check reviewers with", cluster)
	}
	key := sha256.Sum256([]byte(cluster + "\x00" + token))
	now := k.now()
	k.mu.Lock()
	if c, ok := k.cache[key]; ok && now.Before(c.exp) {
		k.mu.Unlock()
		return c.rv, nil
	}
	k.mu.Unlock()
	tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return Reviewer{}, fmt.Errorf("checking the reviewer's token with a TokenReview at cluster %s: %w", cluster, err)
	}
	if !tr.Status.Authenticated {
		return Reviewer{}, errUnauthenticated
	}
	u := tr.Status.User
	rv := Reviewer{Name: u.Username, UID: u.UID, Groups: u.Groups, Via: "cli"}
	if len(u.Extra) > 0 {
		rv.Extra = map[string][]string{}
		for k, v := range u.Extra {
			rv.Extra[k] = v
		}
	}
	k.mu.Lock()
	if len(k.cache) > 1000 {
		for kk, c := range k.cache {
			if !now.Before(c.exp) {
				delete(k.cache, kk)
			}
		}
	}
	k.cache[key] = cachedReview{rv: rv, exp: now.Add(tokenCacheTTL)}
	k.mu.Unlock()
	return rv, nil
}

// Allowed asks the cluster whether rv may do verb on the approval (name may
// be empty for list), in namespace ("" for cluster-wide).
func (k *Kube) Allowed(ctx context.Context, cluster string, rv Reviewer, verb, namespace, name string) (bool, error) {
	cs, ok := k.clients[cluster]
	if !ok {
		return false, fmt.Errorf("no credentials for cluster %q to authorize reviewers with", cluster)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: rv.Name, UID: rv.UID, Groups: rv.Groups,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: namespace, Verb: verb, Group: api.ApprovalAPIGroup, Resource: api.ApprovalResource, Name: name,
		},
	}}
	if len(rv.Extra) > 0 {
		sar.Spec.Extra = map[string]authzv1.ExtraValue{}
		for k, v := range rv.Extra {
			sar.Spec.Extra[k] = v
		}
	}
	out, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("authorizing the reviewer with a SubjectAccessReview at cluster %s: %w", cluster, err)
	}
	return out.Status.Allowed && !out.Status.Denied, nil
}

// isPipeline reports whether a cluster identity is a workload rather than a
// person: ServiceAccounts (every per-run credential the broker issues is
// one) and nodes never approve.
func isPipeline(rv Reviewer) bool {
	if strings.HasPrefix(rv.Name, "system:serviceaccount:") || strings.HasPrefix(rv.Name, "system:node:") {
		return true
	}
	return slices.Contains(rv.Groups, "system:serviceaccounts") || slices.Contains(rv.Groups, "system:nodes")
}

// requesterNames are the names under which a run's requester is known: the
// token subject and the people the CI system names as having started it.
func requesterNames(id api.Identity) []string {
	out := []string{id.Subject}
	for _, c := range []string{"actor", "triggering_actor", "user_login", "user_email", "email", "sub"} {
		if v := id.Claims[c]; v != "" {
			out = append(out, v)
		}
	}
	return out
}

// sameperson reports whether a reviewer is (by any of their names) the
// requester. It errs toward "same": refusing a legitimate reviewer costs a
// second reviewer, approving one's own request defeats the point.
func sameperson(rv Reviewer, requester api.Identity) bool {
	names := map[string]bool{}
	add := func(s string) {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			return
		}
		names[s] = true
		if i := strings.LastIndex(s, ":"); i >= 0 && i < len(s)-1 {
			names[s[i+1:]] = true // "oidc:alice" is alice
		}
		if local, _, ok := strings.Cut(s, "@"); ok && local != "" {
			names[local] = true
		}
	}
	add(rv.Name)
	add(rv.Email)
	for _, n := range requesterNames(requester) {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		if names[n] {
			return true
		}
		if local, _, ok := strings.Cut(n, "@"); ok && names[local] {
			return true
		}
	}
	return false
}

// inGroups reports whether rv is in one of groups (true when groups is empty).
func inGroups(rv Reviewer, groups []string) bool {
	if len(groups) == 0 {
		return true
	}
	for _, g := range groups {
		if slices.Contains(rv.Groups, g) {
			return true
		}
	}
	return false
}
