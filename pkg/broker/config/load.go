package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// FieldError is one problem in the file, at a field.
type FieldError struct {
	File  string
	Line  int
	Field string // e.g. trustRules[2].cluster
	Msg   string
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// Errors are all the problems found, in file order.
type Errors []*FieldError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads, parses and checks a config file.
func Load(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the broker config: %w", err)
	}
	return Parse(file, data)
}

// Parse parses and checks config data; file names it in errors and is the base
// of relative paths.
func Parse(file string, data []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, &FieldError{File: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, &FieldError{File: file, Line: doc.Line, Msg: "the file must be a YAML mapping (apiVersion, kind, ...)"}
	}
	var errs Errors
	checkFields(file, doc, reflect.TypeOf(Config{}), "", &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	var c Config
	if err := sigsyaml.UnmarshalStrict(data, &c); err != nil {
		return nil, &FieldError{File: file, Msg: cleanJSONError(err)}
	}
	c.Dir = filepath.Dir(file)
	v := &validator{file: file, root: doc}
	v.validate(&c)
	if len(v.errs) > 0 {
		slices.SortStableFunc(v.errs, func(a, b *FieldError) int { return a.Line - b.Line })
		return nil, v.errs
	}
	return &c, nil
}

func cleanJSONError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "error unmarshaling JSON: ")
	s = strings.TrimPrefix(s, "while decoding JSON: ")
	s = strings.TrimPrefix(s, "json: ")
	return s
}

var rawMessageType = reflect.TypeOf(json.RawMessage{})

// checkFields walks the YAML tree next to the Go type and reports every key
// that no field takes, at its own line (sigs.k8s.io/yaml's strict mode refuses
// them too, but without a line).
func checkFields(file string, n *yaml.Node, t reflect.Type, at string, errs *Errors) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType {
		return
	}
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()) {
		// Types with their own decoding (durations, patterns): decode the
		// node here, so their errors get a line and a field too.
		var v any
		if err := n.Decode(&v); err == nil {
			b, err := json.Marshal(v)
			if err == nil {
				err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(b)
			}
			if err != nil {
				*errs = append(*errs, &FieldError{File: file, Line: n.Line, Field: at, Msg: strings.TrimPrefix(err.Error(), "time: ")})
			}
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			*errs = append(*errs, &FieldError{File: file, Line: n.Line, Field: at, Msg: "must be a mapping"})
			return
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, &FieldError{File: file, Line: k.Line, Field: join(at, k.Value),
					Msg: fmt.Sprintf("unknown field (known here: %s)", strings.Join(names, ", "))})
				continue
			}
			checkFields(file, val, f.Type, join(at, k.Value), errs)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return
		}
		if n.Kind != yaml.SequenceNode {
			if n.Tag != "!!null" {
				*errs = append(*errs, &FieldError{File: file, Line: n.Line, Field: at, Msg: "must be a list"})
			}
			return
		}
		for i, c := range n.Content {
			checkFields(file, c, t.Elem(), fmt.Sprintf("%s[%d]", at, i), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			if n.Tag != "!!null" {
				*errs = append(*errs, &FieldError{File: file, Line: n.Line, Field: at, Msg: "must be a mapping"})
			}
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkFields(file, n.Content[i+1], t.Elem(), join(at, n.Content[i].Value), errs)
		}
	}
}

func join(at, name string) string {
	if at == "" {
		return name
	}
	return at + "." + name
}

// lineOf finds the line of a field path such as trustRules[2].match.ref (the
// key's line), or of the nearest ancestor that exists.
func lineOf(root *yaml.Node, field string) int {
	n := root
	line := 0
	for _, part := range splitPath(field) {
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(part)
			if err != nil || idx < 0 || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

// splitPath turns a.b[2].c into a, b, 2, c. Map keys may hold dots
// (oidc.circleci.com/project-id): they are written ["key"].
func splitPath(field string) []string {
	var parts []string
	for field != "" {
		switch {
		case strings.HasPrefix(field, `["`):
			end := strings.Index(field, `"]`)
			if end < 0 {
				return append(parts, field)
			}
			parts = append(parts, field[2:end])
			field = field[end+2:]
		case field[0] == '[':
			end := strings.IndexByte(field, ']')
			if end < 0 {
				return append(parts, field)
			}
			parts = append(parts, field[1:end])
			field = field[end+1:]
		case field[0] == '.':
			field = field[1:]
		default:
			end := strings.IndexAny(field, ".[")
			if end < 0 {
				end = len(field)
			}
			parts = append(parts, field[:end])
			field = field[end:]
		}
	}
	return parts
}

type validator struct {
	file string
	root *yaml.Node
	errs Errors
}

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{File: v.file, Line: lineOf(v.root, field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) validate(c *Config) {
	if c.APIVersion != APIVersion {
		v.add("apiVersion", "must be %q, not %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		v.add("kind", "must be %q, not %q", Kind, c.Kind)
	}
	if u, err := url.Parse(c.PublicURL); c.PublicURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		v.add("publicURL", "must be the broker's absolute http(s) URL as clients reach it, e.g. https://broker.example.com")
	} else if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !c.AllowInsecureHTTP {
		v.add("publicURL", "plain http is only allowed for loopback; use https or set allowInsecureHTTP: true behind a TLS proxy")
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if err := CheckListen(c.Listen, c.TLS != nil, c.AllowInsecureHTTP); err != nil {
		v.add("listen", "%v", err)
	}
	if c.TLS != nil {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			v.add("tls", "needs both certFile and keyFile")
		}
		c.TLS.CertFile = c.resolve(c.TLS.CertFile)
		c.TLS.KeyFile = c.resolve(c.TLS.KeyFile)
	}
	if c.Store.URL == "" {
		c.Store.URL = DefaultStoreURL
	}
	if !strings.HasPrefix(c.Store.URL, "sqlite://") && !strings.HasPrefix(c.Store.URL, "postgres://") && !strings.HasPrefix(c.Store.URL, "postgresql://") {
		v.add("store.url", "must start with sqlite:// or postgres://")
	}
	if c.ReconcileInterval != nil && c.ReconcileInterval.Duration < 0 {
		v.add("reconcileInterval", "must not be negative")
	}

	issuers := map[string]Preset{}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		at := fmt.Sprintf("issuers[%d]", i)
		u, err := url.Parse(is.Issuer)
		if is.Issuer == "" || err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
			v.add(at+".issuer", "must be the issuer's https URL exactly as tokens carry it in iss")
		}
		if _, dup := issuers[is.Issuer]; dup {
			v.add(at+".issuer", "issuer %q is listed twice", is.Issuer)
		}
		if is.Preset != "" {
			if _, ok := Presets()[is.Preset]; !ok {
				v.add(at+".preset", "unknown preset %q (known: github, gitlab, circleci, buildkite, generic)", is.Preset)
			}
		}
		if len(is.Audiences) == 0 {
			is.Audiences = []string{c.PublicURL}
		}
		if is.JWKSURL != "" {
			if u, err := url.Parse(is.JWKSURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
				v.add(at+".jwksURL", "must be an https URL")
			}
		}
		for _, alg := range is.SigningAlgs {
			if !slices.Contains(AllowedAlgs, alg) {
				v.add(at+".signingAlgs", "%q is not allowed (allowed: %s)", alg, strings.Join(AllowedAlgs, ", "))
			}
		}
		if len(is.SigningAlgs) == 0 {
			is.SigningAlgs = []string{"RS256", "ES256"}
		}
		for k := range is.IdentityClaims {
			if !slices.Contains(identityFields, k) {
				v.add(at+".identityClaims."+k, "unknown identity field (known: %s)", strings.Join(identityFields, ", "))
			}
		}
		issuers[is.Issuer] = is.PresetFor()
	}
	if len(c.Issuers) == 0 {
		v.add("issuers", "at least one trusted issuer is needed")
	}

	clusters := map[string]bool{}
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		at := fmt.Sprintf("clusters[%d]", i)
		if !isDNSLabelish(cl.Name) {
			v.add(at+".name", "must be a short name of lowercase letters, digits, '-' and '.'")
		}
		if clusters[cl.Name] {
			v.add(at+".name", "cluster %q is listed twice", cl.Name)
		}
		clusters[cl.Name] = true
		if u, err := url.Parse(cl.Server); cl.Server == "" || err != nil || u.Scheme != "https" || u.Host == "" {
			v.add(at+".server", "must be the cluster API's https URL")
		}
		if cl.CAFile != "" {
			if len(cl.CAData) > 0 {
				v.add(at+".caFile", "set caFile or caData, not both")
			}
			cl.CAFile = c.resolve(cl.CAFile)
			data, err := os.ReadFile(cl.CAFile)
			if err != nil {
				v.add(at+".caFile", "cannot read: %v", err)
			}
			cl.CAData = data
		}
		switch cl.Backend.Type {
		case "kubernetes":
			if cl.Backend.Kubernetes == nil {
				cl.Backend.Kubernetes = &KubernetesBackend{}
			}
			if cl.Backend.Kubernetes.Namespace == "" {
				cl.Backend.Kubernetes.Namespace = DefaultNamespace
			}
			if cl.Backend.Kubernetes.Kubeconfig != "" {
				cl.Backend.Kubernetes.Kubeconfig = c.resolve(cl.Backend.Kubernetes.Kubeconfig)
			}
			if len(cl.Backend.EKS) > 0 {
				v.add(at+".backend.eks", "only for type: eks")
			}
		case "eks":
			if len(cl.Backend.EKS) == 0 {
				v.add(at+".backend.eks", "type eks needs its eks settings")
			}
			if cl.Backend.Kubernetes != nil {
				v.add(at+".backend.kubernetes", "only for type: kubernetes")
			}
		default:
			v.add(at+".backend.type", "must be kubernetes or eks, not %q", cl.Backend.Type)
		}
	}

	names := map[string]bool{}
	for i := range c.TrustRules {
		r := &c.TrustRules[i]
		at := fmt.Sprintf("trustRules[%d]", i)
		if r.Name == "" {
			v.add(at+".name", "every rule needs a name (it appears in grants, logs and transcripts)")
		}
		if names[r.Name] {
			v.add(at+".name", "rule name %q is used twice", r.Name)
		}
		names[r.Name] = true
		preset, ok := issuers[r.Issuer]
		if !ok {
			v.add(at+".issuer", "issuer %q is not in issuers", r.Issuer)
		}
		if !clusters[r.Cluster] {
			v.add(at+".cluster", "cluster %q is not defined in clusters", r.Cluster)
		}
		if len(r.Match) == 0 {
			v.add(at+".match", "a rule must match at least one claim")
		}
		for claim, pats := range r.Match {
			cat := at + ".match" + keyPath(claim)
			if len(pats) == 0 {
				v.add(cat, "needs at least one pattern")
			}
			for _, p := range pats {
				if _, err := path.Match(p, ""); err != nil || p == "" {
					v.add(cat, "bad glob %q: %v", p, errOr(err, "empty"))
				}
			}
			if slices.Contains(preset.ForbiddenMatch, claim) {
				v.add(cat, "rules for %s tokens must not match on %q; match on repository or repository_id and the other claims", preset.Name, claim)
			}
		}
		if ok && len(preset.TenantClaims) > 0 && !pinsTenant(r.Match, preset.TenantClaims) {
			v.add(at+".match", "%s's issuer serves everyone: the rule must pin one of %s with a pattern that does not start with a wildcard",
				preset.Name, strings.Join(preset.TenantClaims, ", "))
		}
		if r.TTL != nil && (r.TTL.Duration < MinTTL || r.TTL.Duration > MaxTTL) {
			v.add(at+".ttl", "must be between %s and %s", MinTTL, MaxTTL)
		}
		v.validateGrant(c, r, at)
		if r.Policy != "" && r.PolicyFile != "" {
			v.add(at+".policyFile", "set policy or policyFile, not both")
		}
		if r.PolicyFile != "" {
			r.PolicyFile = c.resolve(r.PolicyFile)
			data, err := os.ReadFile(r.PolicyFile)
			if err != nil {
				v.add(at+".policyFile", "cannot read: %v", err)
			}
			r.Policy = string(data)
		}
	}
	if len(c.TrustRules) == 0 {
		v.add("trustRules", "at least one trust rule is needed, or no run gets anything")
	}
}

func (v *validator) validateGrant(c *Config, r *TrustRule, at string) {
	g := r.Grant
	at += ".grant"
	cl, _ := c.ClusterByName(r.Cluster)
	if len(g.ClusterRules) > 0 && (len(g.Namespaces) > 0 || len(g.Rules) > 0) {
		v.add(at, "use namespaces+rules or clusterRules, not both")
	}
	if len(g.Rules) > 0 && len(g.Namespaces) == 0 {
		v.add(at+".namespaces", "rules apply in namespaces: list them (or use clusterRules)")
	}
	for i, ns := range g.Namespaces {
		if !isDNSLabelish(ns) || strings.Contains(ns, ".") {
			v.add(fmt.Sprintf("%s.namespaces[%d]", at, i), "%q is not a namespace name", ns)
		}
	}
	check := func(field string, rules []api.PolicyRule, cluster bool) {
		for i, pr := range rules {
			rat := fmt.Sprintf("%s.%s[%d]", at, field, i)
			if len(pr.Verbs) == 0 {
				v.add(rat+".verbs", "a rule needs verbs")
			}
			if len(pr.NonResourceURLs) > 0 {
				if !cluster {
					v.add(rat+".nonResourceURLs", "only in clusterRules")
				}
				if len(pr.Resources) > 0 {
					v.add(rat, "resources and nonResourceURLs do not mix in one rule")
				}
			} else if len(pr.Resources) == 0 {
				v.add(rat+".resources", "a rule needs resources (or nonResourceURLs in clusterRules)")
			}
		}
	}
	check("rules", g.Rules, false)
	check("clusterRules", g.ClusterRules, true)
	if cl != nil && cl.Backend.Type == "kubernetes" {
		if g.IAMRole != "" {
			v.add(at+".iamRole", "only for eks clusters")
		}
		if len(g.Rules) == 0 && len(g.ClusterRules) == 0 {
			v.add(at, "grants nothing: give rules in namespaces, or clusterRules")
		}
	}
	if cl != nil && cl.Backend.Type == "eks" && g.IAMRole == "" && len(g.Rules) == 0 && len(g.ClusterRules) == 0 {
		v.add(at, "grants nothing: give an iamRole or RBAC rules")
	}
}

// pinsTenant reports whether a rule constrains the tenant: some tenant claim
// with patterns that all start with a literal.
func pinsTenant(match map[string]Patterns, tenant []string) bool {
	for _, claim := range tenant {
		pats, ok := match[claim]
		if !ok || len(pats) == 0 {
			continue
		}
		all := true
		for _, p := range pats {
			first, _, _ := strings.Cut(p, "/")
			if first == "" || strings.ContainsAny(first, `*?[\`) {
				all = false
			}
		}
		if all {
			return true
		}
	}
	return false
}

// CheckListen refuses plain HTTP on non-loopback addresses unless allowed.
func CheckListen(listen string, tls, allowInsecure bool) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("%q is not host:port", listen)
	}
	if !tls && !allowInsecure && !isLoopbackHost(host) {
		return fmt.Errorf("plain HTTP on %q would expose tokens; configure tls, listen on 127.0.0.1, or set allowInsecureHTTP: true (--insecure-http) behind a TLS proxy", listen)
	}
	return nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func isDNSLabelish(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (i > 0 && (r == '-' || r == '.'))
		if !ok {
			return false
		}
	}
	return !strings.HasSuffix(s, "-")
}

func keyPath(k string) string {
	if strings.ContainsAny(k, ".[]") {
		return `["` + k + `"]`
	}
	return "." + k
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// AllowedAlgs are the token algorithms an issuer may be configured with;
// "none" and the HMAC family never are (a public key is no secret).
var AllowedAlgs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}

// ErrNoConfig is returned when no config file is given.
var ErrNoConfig = errors.New("no config file: pass --config FILE")
