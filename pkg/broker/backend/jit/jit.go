// Package jit is the kubernetes credential backend: per session a
// ServiceAccount in the broker's namespace, Roles and RoleBindings (or a
// ClusterRole and ClusterRoleBinding) with exactly the granted rules, and a
// TokenRequest token. Everything it creates is labelled with the session, so
// Revoke and Reconcile find it by label and nothing outlives its session, not
// even across broker restarts or a lost store.
//
// The apiserver's minimum TokenRequest lifetime is 10 minutes. A session
// shorter than that gets a token that outlives it on paper; what cuts it is
// revocation: ending the session, or the reconciler after expiry, deletes the
// ServiceAccount, and the apiserver stops accepting its tokens within ~10 s.
package jit

import (
	"context"
	"errors"
	"fmt"
	authorizationv1 "k8s.io/api/authorization/v1"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
)

// Labels and annotations on every object the backend makes.
const (
	LabelSession   = "kubectl-agent.io/session"
	LabelManagedBy = "kubectl-agent.io/managed-by"
	ManagedBy      = "agent-broker"

	AnnotationRepository = "kubectl-agent.io/repository"
	AnnotationRun        = "kubectl-agent.io/run"
	AnnotationRule       = "kubectl-agent.io/rule"
	AnnotationExpires    = "kubectl-agent.io/expires-at"

	// MinTokenSeconds is the apiserver's minimum TokenRequest lifetime.
	MinTokenSeconds = 600
)

// Config configures the backend.
type Config struct {
	Client kubernetes.Interface
	// Namespace holds the per-session ServiceAccounts.
	Namespace string
	// Server and CAData are what clients use to reach the cluster.
	Server string
	CAData []byte
	Now    func() time.Time
}

// Backend implements backend.Backend with JIT ServiceAccounts.
type Backend struct {
	c   kubernetes.Interface
	ns  string
	srv string
	ca  []byte
	now func() time.Time
}

var _ backend.Backend = (*Backend)(nil)

// New makes the backend.
func New(cfg Config) (*Backend, error) {
	if cfg.Client == nil || cfg.Namespace == "" {
		return nil, errors.New("jit backend: a client and a namespace are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Backend{c: cfg.Client, ns: cfg.Namespace, srv: cfg.Server, ca: cfg.CAData, now: cfg.Now}, nil
}

// Name is the object name for a session: ka-<session id>. Session ids are
// lowercase hex, so this is a valid DNS label.
func Name(sessionID string) string { return "ka-" + strings.ToLower(sessionID) }

// ServiceAccount is the username the session's token authenticates as.
func (b *Backend) ServiceAccount(sessionID string) string {
	return "system:serviceaccount:" + b.ns + ":" + Name(sessionID)
}

func (b *Backend) labels(req backend.Request) map[string]string {
	return map[string]string{LabelSession: req.SessionID, LabelManagedBy: ManagedBy}
}

func (b *Backend) annotations(req backend.Request) map[string]string {
	return map[string]string{
		AnnotationRepository: req.Identity.Repository,
		AnnotationRun:        strings.Trim(req.Identity.RunID+"/"+req.Identity.RunAttempt, "/"),
		AnnotationRule:       req.Grant.Rule,
		AnnotationExpires:    req.ExpiresAt.UTC().Format(time.RFC3339),
	}
}

// apply is server-side apply owned by the broker: one call per object, new
// or not, and a retried Issue converges on the grant.
var apply = metav1.ApplyOptions{FieldManager: ManagedBy, Force: true}

// Issue makes sure the session's ServiceAccount and RBAC exist exactly as
// granted (server-side apply, idempotent) and returns a fresh token.
func (b *Backend) Issue(ctx context.Context, req backend.Request) (*api.Credential, error) {
	if req.SessionID == "" || strings.ContainsAny(req.SessionID, "/.: ") {
		return nil, fmt.Errorf("jit backend: bad session id %q", req.SessionID)
	}
	remaining := req.ExpiresAt.Sub(b.now())
	if remaining <= 0 {
		return nil, errors.New("jit backend: the session has expired")
	}
	name := Name(req.SessionID)
	labels, annotations := b.labels(req), b.annotations(req)
	sa := corev1ac.ServiceAccount(name, b.ns).WithLabels(labels).WithAnnotations(annotations).WithAutomountServiceAccountToken(false)
	if _, err := b.c.CoreV1().ServiceAccounts(b.ns).Apply(ctx, sa, apply); err != nil {
		return nil, fmt.Errorf("applying ServiceAccount %s/%s: %w", b.ns, name, err)
	}
	subject := rbacv1ac.Subject().WithKind(rbacv1.ServiceAccountKind).WithName(name).WithNamespace(b.ns)
	rules := toRBAC(req.Grant.Rules)
	if len(req.Grant.Namespaces) == 0 && len(rules) > 0 {
		cr := rbacv1ac.ClusterRole(name).WithLabels(labels).WithAnnotations(annotations).WithRules(rules...)
		if _, err := b.c.RbacV1().ClusterRoles().Apply(ctx, cr, apply); err != nil {
			return nil, fmt.Errorf("applying ClusterRole %s: %w", name, err)
		}
		crb := rbacv1ac.ClusterRoleBinding(name).WithLabels(labels).WithAnnotations(annotations).WithSubjects(subject).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("ClusterRole").WithName(name))
		if _, err := b.c.RbacV1().ClusterRoleBindings().Apply(ctx, crb, apply); err != nil {
			return nil, fmt.Errorf("applying ClusterRoleBinding %s: %w", name, err)
		}
	}
	for _, ns := range req.Grant.Namespaces {
		role := rbacv1ac.Role(name, ns).WithLabels(labels).WithAnnotations(annotations).WithRules(rules...)
		if _, err := b.c.RbacV1().Roles(ns).Apply(ctx, role, apply); err != nil {
			return nil, fmt.Errorf("applying Role %s/%s: %w", ns, name, err)
		}
		rb := rbacv1ac.RoleBinding(name, ns).WithLabels(labels).WithAnnotations(annotations).WithSubjects(subject).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("Role").WithName(name))
		if _, err := b.c.RbacV1().RoleBindings(ns).Apply(ctx, rb, apply); err != nil {
			return nil, fmt.Errorf("applying RoleBinding %s/%s: %w", ns, name, err)
		}
	}
	if err := b.waitAuthorized(ctx, name, req.Grant); err != nil {
		return nil, err
	}
	secs := int64(remaining / time.Second)
	if secs < MinTokenSeconds {
		secs = MinTokenSeconds
	}
	tr, err := b.c.CoreV1().ServiceAccounts(b.ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", b.ns, name, err)
	}
	exp := tr.Status.ExpirationTimestamp.Time
	if req.ExpiresAt.Before(exp) {
		exp = req.ExpiresAt
	}
	return &api.Credential{Token: tr.Status.Token, ExpiresAt: exp, Server: b.srv, CAData: b.ca}, nil
}

func toRBAC(rules []api.PolicyRule) []*rbacv1ac.PolicyRuleApplyConfiguration {
	out := make([]*rbacv1ac.PolicyRuleApplyConfiguration, 0, len(rules))
	for _, r := range rules {
		out = append(out, rbacv1ac.PolicyRule().WithVerbs(r.Verbs...).WithAPIGroups(r.APIGroups...).WithResources(r.Resources...).
			WithResourceNames(r.ResourceNames...).WithNonResourceURLs(r.NonResourceURLs...))
	}
	return out
}

// Revoke deletes the session's ServiceAccount first (that is what revokes its
// tokens), then its roles and bindings.
func (b *Backend) Revoke(ctx context.Context, sessionID string) error {
	return b.deleteSessions(ctx, func(id string) bool { return id == sessionID }, sessionSelector(sessionID))
}

// Reconcile deletes the objects of every session live reports dead.
func (b *Backend) Reconcile(ctx context.Context, live func(sessionID string) bool) error {
	return b.deleteSessions(ctx, func(id string) bool { return !live(id) }, LabelManagedBy+"="+ManagedBy)
}

func sessionSelector(id string) string {
	return LabelManagedBy + "=" + ManagedBy + "," + LabelSession + "=" + id
}

// deleteSessions deletes labelled objects (selected by selector) whose
// session label passes doomed. It keeps going after an error and returns
// them all, so one stuck object does not shield the rest.
func (b *Backend) deleteSessions(ctx context.Context, doomed func(string) bool, selector string) error {
	var errs []error
	lo := metav1.ListOptions{LabelSelector: selector}
	del := metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)}
	ignore := func(err error) error {
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	doomedOf := func(m metav1.ObjectMeta) bool { return doomed(m.Labels[LabelSession]) }

	sas, err := b.c.CoreV1().ServiceAccounts(b.ns).List(ctx, lo)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing ServiceAccounts in %s: %w", b.ns, err))
	} else {
		for _, o := range sas.Items {
			if doomedOf(o.ObjectMeta) {
				errs = append(errs, ignore(b.c.CoreV1().ServiceAccounts(b.ns).Delete(ctx, o.Name, del)))
			}
		}
	}
	rbs, err := b.c.RbacV1().RoleBindings(metav1.NamespaceAll).List(ctx, lo)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing RoleBindings: %w", err))
	} else {
		for _, o := range rbs.Items {
			if doomedOf(o.ObjectMeta) {
				errs = append(errs, ignore(b.c.RbacV1().RoleBindings(o.Namespace).Delete(ctx, o.Name, del)))
			}
		}
	}
	roles, err := b.c.RbacV1().Roles(metav1.NamespaceAll).List(ctx, lo)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing Roles: %w", err))
	} else {
		for _, o := range roles.Items {
			if doomedOf(o.ObjectMeta) {
				errs = append(errs, ignore(b.c.RbacV1().Roles(o.Namespace).Delete(ctx, o.Name, del)))
			}
		}
	}
	crbs, err := b.c.RbacV1().ClusterRoleBindings().List(ctx, lo)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing ClusterRoleBindings: %w", err))
	} else {
		for _, o := range crbs.Items {
			if doomedOf(o.ObjectMeta) {
				errs = append(errs, ignore(b.c.RbacV1().ClusterRoleBindings().Delete(ctx, o.Name, del)))
			}
		}
	}
	crs, err := b.c.RbacV1().ClusterRoles().List(ctx, lo)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing ClusterRoles: %w", err))
	} else {
		for _, o := range crs.Items {
			if doomedOf(o.ObjectMeta) {
				errs = append(errs, ignore(b.c.RbacV1().ClusterRoles().Delete(ctx, o.Name, del)))
			}
		}
	}
	return errors.Join(errs...)
}

// Ready lists one ServiceAccount in the broker's namespace: it proves the
// cluster answers and the broker's own credential works there.
func (b *Backend) Ready(ctx context.Context) error {
	if _, err := b.c.CoreV1().ServiceAccounts(b.ns).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("listing ServiceAccounts in %s: %w", b.ns, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// waitAuthorized waits until the apiserver authorizes the first granted rule
// for the session's ServiceAccount. RBAC is served from an informer cache, so
// a binding just created can take a moment to count; a token handed out
// before then gets Forbidden on the run's first call (seen under load).
func (b *Backend) waitAuthorized(ctx context.Context, sa string, g api.Grant) error {
	if len(g.Rules) == 0 || len(g.Rules[0].Verbs) == 0 {
		return nil
	}
	r := g.Rules[0]
	attrs := &authorizationv1.ResourceAttributes{Verb: concrete(r.Verbs, "get")}
	if len(r.NonResourceURLs) > 0 && len(r.Resources) == 0 {
		return nil // a non-resource grant: nothing namespaced to wait for
	}
	attrs.Group = concrete(r.APIGroups, "")
	res := concrete(r.Resources, "pods")
	attrs.Resource, attrs.Subresource, _ = strings.Cut(res, "/")
	if len(r.ResourceNames) > 0 {
		attrs.Name = r.ResourceNames[0]
	}
	if len(g.Namespaces) > 0 {
		attrs.Namespace = g.Namespaces[0]
	}
	// How the apiserver names a ServiceAccount and its groups.
	user := "system:serviceaccount:" + b.ns + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + b.ns, "system:authenticated"}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups, ResourceAttributes: attrs,
	}}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		resp, err := b.c.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("checking that the grant of %s is in effect: %w", user, err)
		}
		if resp.Status.Allowed {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the apiserver did not authorize %s %s for %s within 15s of granting it (%s)", attrs.Verb, res, user, resp.Status.Reason)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// concrete is the first value of vs that is not a wildcard, or def.
func concrete(vs []string, def string) string {
	for _, v := range vs {
		if v != "*" && !strings.Contains(v, "*") {
			return v
		}
	}
	return def
}
