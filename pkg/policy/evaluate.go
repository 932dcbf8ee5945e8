package policy

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
)

// Input is what Evaluate decides on: the request's attributes and, when
// NeedsObject says so, its decoded body (Object) and the stored object it
// replaces (OldObject). Session holds the run's facts for CEL (claims, grant).
type Input struct {
	Attributes Attributes
	Object     map[string]any
	OldObject  map[string]any
	Session    map[string]any
}

// Decision is the outcome for one request: the action, the rule that decided
// (empty when the default decided) and a message for the person or log.
type Decision struct {
	Action  Action `json:"action"`
	Rule    string `json:"rule,omitempty"`
	Message string `json:"message,omitempty"`
}

// CEL limits: a `when` is a small predicate; these stop a runaway one (a
// comprehension over a huge list) from holding a request.
const (
	celCostLimit   = 1_000_000
	celTimeout     = 100 * time.Millisecond
	celInterruptNs = 100 // comprehension iterations between context checks
)

// macro is what a `@name` in resources stands for.
type macroEntry struct {
	groups, resources, verbs []string
}

var macros = map[string][]macroEntry{
	"@exec": {{groups: []string{""}, resources: []string{
		"pods/exec", "pods/attach", "pods/portforward", "pods/ephemeralcontainers", "pods/proxy", "services/proxy", "nodes/proxy"}}},
	"@secret-read": {
		{groups: []string{""}, resources: []string{"secrets"}, verbs: []string{"get", "list", "watch"}},
		{groups: []string{""}, resources: []string{"serviceaccounts/token"}, verbs: []string{"create"}},
	},
	"@rbac-write": {{groups: []string{"rbac.authorization.k8s.io"},
		resources: []string{"roles", "rolebindings", "clusterroles", "clusterrolebindings"},
		verbs:     []string{"create", "update", "patch", "delete", "deletecollection", "escalate", "bind"}}},
	"@impersonate": {
		{groups: []string{""}, resources: []string{"users", "groups", "serviceaccounts"}, verbs: []string{"impersonate"}},
		{groups: []string{"authentication.k8s.io"}, resources: []string{"uids", "userextras/*"}, verbs: []string{"impersonate"}},
	},
}

func macroNames() []string {
	var out []string
	for k := range macros {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// clusterScoped lists built-in resources that have no namespace. A request
// without a namespace on any other resource (say `GET /api/v1/secrets`, the
// list behind `kubectl get secrets -A`) spans every namespace.
var clusterScoped = map[string]bool{
	"namespaces": true, "nodes": true, "persistentvolumes": true, "componentstatuses": true,
	"clusterroles": true, "clusterrolebindings": true, "storageclasses": true, "csidrivers": true,
	"csinodes": true, "volumeattachments": true, "customresourcedefinitions": true, "apiservices": true,
	"priorityclasses": true, "runtimeclasses": true, "ingressclasses": true, "certificatesigningrequests": true,
	"mutatingwebhookconfigurations": true, "validatingwebhookconfigurations": true,
	"validatingadmissionpolicies": true, "validatingadmissionpolicybindings": true,
	"mutatingadmissionpolicies": true, "mutatingadmissionpolicybindings": true,
	"flowschemas": true, "prioritylevelconfigurations": true, "tokenreviews": true,
	"selfsubjectaccessreviews": true, "selfsubjectrulesreviews": true, "selfsubjectreviews": true,
	"subjectaccessreviews": true, "ipaddresses": true, "servicecidrs": true, "deviceclasses": true,
	"resourceslices": true, "clustertrustbundles": true, "volumeattributesclasses": true,
	"users": true, "groups": true, "uids": true, "userextras": true,
}

// compiledRule is a rule ready to match: macros expanded and `when` compiled.
type compiledRule struct {
	rule        *Rule
	specs       []matchSpec // any of them matching matches (one per macro entry, or the rule itself)
	prg         cel.Program
	readsObject bool
}

type matchSpec struct {
	verbs, groups, resources []string // nil = all
}

func newCELEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("object", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("oldObject", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("session", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("exec", cel.ListType(cel.StringType)),
		cel.CrossTypeNumericComparisons(true),
		ext.Strings(),
	)
}

func (p *Policy) compile() error {
	var env *cel.Env
	p.compiled = make([]*compiledRule, 0, len(p.Rules))
	for i := range p.Rules {
		r := &p.Rules[i]
		cr := &compiledRule{rule: r}
		var plain []string
		for _, res := range r.Resources {
			entries, ok := macros[res]
			if !ok {
				plain = append(plain, res)
				continue
			}
			for _, e := range entries {
				s := matchSpec{verbs: e.verbs, groups: e.groups, resources: e.resources}
				if len(r.Verbs) > 0 {
					s.verbs = r.Verbs
				}
				if len(r.APIGroups) > 0 {
					s.groups = r.APIGroups
				}
				cr.specs = append(cr.specs, s)
			}
		}
		if len(plain) > 0 || len(r.Resources) == 0 {
			cr.specs = append(cr.specs, matchSpec{verbs: r.Verbs, groups: r.APIGroups, resources: plain})
		}
		if strings.TrimSpace(r.When) != "" {
			if env == nil {
				var err error
				if env, err = newCELEnv(); err != nil {
					return fmt.Errorf("setting up CEL: %w", err)
				}
			}
			ast, iss := env.Compile(r.When)
			if iss.Err() != nil {
				return fmt.Errorf("rules[%d] %q: when: %v", i, r.Name, strings.ReplaceAll(iss.Err().Error(), "\n", " "))
			}
			if ast.OutputType() != cel.BoolType {
				return fmt.Errorf("rules[%d] %q: when: must be a boolean expression, this one is %v", i, r.Name, ast.OutputType())
			}
			for _, ref := range ast.NativeRep().ReferenceMap() {
				if ref.Name == "object" || ref.Name == "oldObject" {
					cr.readsObject = true
				}
			}
			prg, err := env.Program(ast, cel.CostLimit(celCostLimit), cel.InterruptCheckFrequency(celInterruptNs))
			if err != nil {
				return fmt.Errorf("rules[%d] %q: when: %v", i, r.Name, err)
			}
			cr.prg = prg
		}
		p.compiled = append(p.compiled, cr)
	}
	return nil
}

func strength(a Action) int {
	switch a {
	case Allow:
		return 0
	case Approve:
		return 1
	}
	return 2 // deny, and anything unknown: fail closed
}

// Evaluate decides one request. Among matching rules deny wins over approve,
// approve over allow (the first rule of the winning action is named); with no
// match the default action applies. A request that impersonates is also
// checked as `impersonate` on each target (ImpersonationAttributes), and the
// strongest decision wins. A non-nil error means the decision may be
// incomplete: callers must then deny.
func (p *Policy) Evaluate(ctx context.Context, in Input) (Decision, error) {
	if p == nil {
		return Decision{Action: Deny, Message: "no policy loaded"}, errors.New("no policy")
	}
	if len(p.parts) > 0 {
		var best Decision
		var errs []error
		for i, part := range p.parts {
			d, err := part.Evaluate(ctx, in)
			if err != nil {
				errs = append(errs, err)
			}
			if i == 0 || strength(d.Action) > strength(best.Action) {
				best = d
			}
		}
		return best, errors.Join(errs...)
	}
	if p.compiled == nil && len(p.Rules) > 0 {
		// A Policy built by hand, not by Parse: compile on the fly.
		q := *p
		if err := q.compile(); err != nil {
			return Decision{Action: Deny, Message: err.Error()}, err
		}
		p = &q
	}
	in.Attributes = withNameFromObject(in.Attributes, in.Object)
	best, err := p.evalOne(ctx, in, in.Attributes)
	errs := []error{err}
	if len(in.Attributes.Impersonate) > 0 {
		imps, ierr := ImpersonationAttributes(in.Attributes)
		if ierr != nil {
			return Decision{Action: Deny, Message: ierr.Error()}, ierr
		}
		for _, ia := range imps {
			d, err := p.evalOne(ctx, in, ia)
			errs = append(errs, err)
			if strength(d.Action) > strength(best.Action) {
				best = d
			}
		}
	}
	return best, errors.Join(errs...)
}

// withNameFromObject gives a create request (which has no name in its path)
// the name from its body, so that `names:` and the namespace-object rule see
// `kubectl create namespace prod` as acting on prod.
func withNameFromObject(a Attributes, obj map[string]any) Attributes {
	if a.Name != "" || a.Verb != "create" || obj == nil || a.Subresource != "" {
		return a
	}
	if md, ok := obj["metadata"].(map[string]any); ok {
		if n, ok := md["name"].(string); ok {
			a.Name = n
		}
	}
	return a
}

func (p *Policy) evalOne(ctx context.Context, in Input, a Attributes) (Decision, error) {
	var best *compiledRule
	var errs []error
	for _, cr := range p.compiled {
		if best != nil && strength(cr.rule.Action) <= strength(best.rule.Action) {
			continue // cannot change the outcome
		}
		tighten := cr.rule.Action != Allow
		if !cr.matchAttributes(a, tighten) {
			continue
		}
		if cr.prg != nil {
			ok, err := cr.evalWhen(ctx, in, a)
			if err != nil {
				errs = append(errs, fmt.Errorf("rule %q: when: %w", cr.rule.Name, err))
				if !tighten {
					continue // an allow rule that cannot be evaluated does not allow
				}
				ok = true // fail closed
			}
			if !ok {
				continue
			}
		}
		best = cr
	}
	if best == nil {
		d := Decision{Action: p.DefaultAction, Message: "no rule matched"}
		if d.Action == "" {
			d.Action = Allow
		}
		if d.Action == Deny {
			d.Message = "no rule allows this request and the default action is deny"
		}
		return d, errors.Join(errs...)
	}
	d := Decision{Action: best.rule.Action, Rule: best.rule.Name, Message: best.rule.Message}
	if d.Message == "" {
		switch d.Action {
		case Deny:
			d.Message = fmt.Sprintf("denied by policy rule %q", best.rule.Name)
		case Approve:
			d.Message = fmt.Sprintf("approval required by policy rule %q", best.rule.Name)
		default:
			d.Message = fmt.Sprintf("allowed by policy rule %q", best.rule.Name)
		}
	}
	return d, errors.Join(errs...)
}

func (cr *compiledRule) evalWhen(ctx context.Context, in Input, a Attributes) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, celTimeout)
	defer cancel()
	vars := map[string]any{
		"request":   requestMap(a),
		"object":    orEmpty(in.Object),
		"oldObject": orEmpty(in.OldObject),
		"session":   orEmpty(in.Session),
		"exec":      orEmptyList(a.Command),
	}
	out, _, err := cr.prg.ContextEval(ctx, vars)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("result is %v, not a boolean", out.Type())
	}
	return b, nil
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func orEmptyList(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// requestMap is `request` in CEL: the attributes under their JSON names.
func requestMap(a Attributes) map[string]any {
	return map[string]any{
		"verb": a.Verb, "apiGroup": a.APIGroup, "apiVersion": a.APIVersion, "resource": a.Resource,
		"subresource": a.Subresource, "namespace": a.Namespace, "name": a.Name,
		"resourceRequest": a.ResourceRequest, "path": a.Path, "dryRun": a.DryRun,
		"impersonate": orEmptyList(a.Impersonate), "command": orEmptyList(a.Command),
	}
}

// matchAttributes reports whether the rule's fields (not `when`) match. With
// tighten (deny and approve rules) comparisons ignore case and a collection
// request that spans namespaces or names counts as touching each of them, so
// that such rules err on the side of matching; allow rules match exactly.
func (cr *compiledRule) matchAttributes(a Attributes, tighten bool) bool {
	r := cr.rule
	norm := func(s string) string { return s }
	if tighten {
		norm = strings.ToLower
	}
	verb, group, res, sub := norm(a.Verb), norm(a.APIGroup), norm(a.Resource), norm(a.Subresource)
	if !a.ResourceRequest {
		if len(r.Resources) > 0 || len(r.APIGroups) > 0 || len(r.Names) > 0 || len(r.Namespaces) > 0 {
			return false
		}
		return len(r.Verbs) == 0 || contains(r.Verbs, "*") || contains(r.Verbs, strings.ToLower(verb))
	}
	specOK := false
	for _, s := range cr.specs {
		if (len(s.verbs) == 0 || contains(s.verbs, "*") || contains(s.verbs, verb)) &&
			(len(s.groups) == 0 || contains(s.groups, "*") || contains(s.groups, group)) &&
			(len(s.resources) == 0 || resourceMatches(s.resources, res, sub)) {
			specOK = true
			break
		}
	}
	if !specOK {
		return false
	}
	// No name on anything but a plain create means "whichever objects match":
	// list, watch and deletecollection, or a mapped `delete -l` / `--all`.
	collection := a.Name == "" && (verb != "create" || a.Subresource != "")
	if len(r.Names) > 0 {
		if a.Name == "" {
			if !(tighten && collection) {
				return false
			}
		} else if !globAny(r.Names, a.Name, tighten) {
			return false
		}
	}
	if len(r.Namespaces) > 0 {
		ns := a.Namespace
		isNamespaceObject := group == "" && res == "namespaces"
		if isNamespaceObject && a.Name != "" {
			ns = a.Name
		}
		switch {
		case ns != "":
			if !globAny(r.Namespaces, ns, tighten) {
				return false
			}
		case tighten && collection && (isNamespaceObject || !clusterScoped[res]):
			// spans every namespace, so it touches the ones named
		default:
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// resourceMatches is RBAC's rule: "*" matches everything, "pods" only pods
// (not pods/log), "pods/log" that subresource, "*/scale" that subresource of
// any resource; and "pods/*" every subresource of pods.
func resourceMatches(patterns []string, res, sub string) bool {
	combined := res
	if sub != "" {
		combined = res + "/" + sub
	}
	for _, p := range patterns {
		switch {
		case p == "*", p == combined:
			return true
		case sub == "":
			continue
		case p == "*/"+sub, p == res+"/*":
			return true
		}
	}
	return false
}

func globAny(patterns []string, s string, fold bool) bool {
	if fold {
		s = strings.ToLower(s)
	}
	for _, p := range patterns {
		if fold {
			p = strings.ToLower(p)
		}
		if p == "*" || p == s {
			return true
		}
		if ok, err := path.Match(p, s); err == nil && ok {
			return true
		}
	}
	return false
}

// ImpersonationAttributes returns, for a request with Impersonate entries,
// the extra `impersonate` requests that Kubernetes authorizes for it:
// user:NAME → users NAME (or serviceaccounts NAME in NS for
// system:serviceaccount:NS:NAME), group:NAME → groups, uid:UID →
// authentication.k8s.io uids, extra:KEY=VALUE → authentication.k8s.io
// userextras/KEY named VALUE. An entry of any other form is an error.
func ImpersonationAttributes(a Attributes) ([]Attributes, error) {
	var out []Attributes
	for _, imp := range a.Impersonate {
		kind, val, ok := strings.Cut(imp, ":")
		if !ok {
			return nil, fmt.Errorf("impersonation %q is not of the form user:NAME, group:NAME, uid:UID or extra:KEY=VALUE", imp)
		}
		ia := Attributes{Verb: "impersonate", APIVersion: "v1", ResourceRequest: true, Name: val}
		switch kind {
		case "user":
			ia.Resource = "users"
			if rest, ok := strings.CutPrefix(val, "system:serviceaccount:"); ok {
				if ns, name, ok := strings.Cut(rest, ":"); ok {
					ia.Resource, ia.Namespace, ia.Name = "serviceaccounts", ns, name
				}
			}
		case "group":
			ia.Resource = "groups"
		case "uid":
			ia.APIGroup, ia.Resource = "authentication.k8s.io", "uids"
		case "extra":
			key, v, _ := strings.Cut(val, "=")
			ia.APIGroup, ia.Resource, ia.Subresource, ia.Name = "authentication.k8s.io", "userextras", key, v
		default:
			return nil, fmt.Errorf("impersonation %q is not of the form user:NAME, group:NAME, uid:UID or extra:KEY=VALUE", imp)
		}
		out = append(out, ia)
	}
	return out, nil
}

// NeedsObject reports whether deciding on these attributes may need the
// request body: some rule that could match them has a `when` that reads
// object or oldObject, or the request is a create whose name (in the body)
// a names/namespaces rule could care about. The proxy buffers bodies only
// then.
func (p *Policy) NeedsObject(a Attributes) bool {
	if p == nil {
		return false
	}
	for _, part := range p.parts {
		if part.NeedsObject(a) {
			return true
		}
	}
	all := []Attributes{a}
	if imps, err := ImpersonationAttributes(a); err == nil {
		all = append(all, imps...)
	}
	for _, cr := range p.compiled {
		for _, x := range all {
			probe := x
			if probe.Verb == "create" && probe.Name == "" && probe.Subresource == "" {
				probe.Name = "x" // any name: would the rule match some name?
				if cr.matchAttributesIgnoringNames(probe) {
					return true
				}
			}
			if cr.readsObject && cr.matchAttributes(x, true) {
				return true
			}
		}
	}
	return false
}

func (cr *compiledRule) matchAttributesIgnoringNames(a Attributes) bool {
	if len(cr.rule.Names) == 0 && (len(cr.rule.Namespaces) == 0 || a.Resource != "namespaces") {
		return false
	}
	c := *cr
	r := *cr.rule
	r.Names = nil
	if a.Resource == "namespaces" {
		r.Namespaces = nil
	}
	c.rule = &r
	return c.matchAttributes(a, true)
}
