package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// APIVersion and Kind of a policy file.
const (
	APIVersion = "kubectl-agent.io/v1alpha1"
	Kind       = "Policy"
)

// maxPolicyBytes bounds what Parse reads: a policy is a few KiB; anything
// larger is a mistake (or an attack on the YAML decoder).
const maxPolicyBytes = 1 << 20

// Policy is a parsed, validated policy file. Its zero value is not useful; use
// Parse, Load, Default or Combine. A Policy is immutable after construction and
// safe for concurrent use.
type Policy struct {
	APIVersion    string     `json:"apiVersion"`
	Kind          string     `json:"kind"`
	DefaultAction Action     `json:"defaultAction"`
	Rules         []Rule     `json:"rules"`
	MaskSpecs     []MaskSpec `json:"mask"`

	// Source names where the policy came from (a file path, "default",
	// "broker"), for messages.
	Source string `json:"-"`

	// parts is set by Combine: each part is evaluated on its own and the
	// strongest decision wins, so that a local allow rule can never loosen
	// the broker's policy (a plain union of rules could).
	parts []*Policy

	compiled []*compiledRule
}

// Rule is one entry of `rules`. Omitted fields match everything.
type Rule struct {
	Name       string   `json:"name"`
	Action     Action   `json:"action"`
	Verbs      []string `json:"verbs,omitempty"`
	APIGroups  []string `json:"apiGroups,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Names      []string `json:"names,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
	When       string   `json:"when,omitempty"`
	Message    string   `json:"message,omitempty"`
}

// MaskSpec is one entry of `mask` as written in the file.
type MaskSpec struct {
	Kinds []string `json:"kinds"`
	Keys  []string `json:"keys,omitempty"`
}

// MaskRule is a compiled MaskSpec: objects of these kinds have their data
// values (Secret data/stringData, ConfigMap data/binaryData) replaced when the
// key matches one of Keys; nil Keys means every key.
type MaskRule struct {
	Kinds []string
	Keys  []*regexp.Regexp
}

// KnownVerbs are the verbs a rule may name (Kubernetes authorization verbs,
// plus the lower-case HTTP methods that non-resource requests carry).
var knownVerbs = []string{
	"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection",
	"impersonate", "escalate", "bind", "approve", "sign", "attest", "use", "proxy",
	"post", "put", "head", "options",
}

func isKnownVerb(v string) bool {
	for _, k := range knownVerbs {
		if v == k {
			return true
		}
	}
	return v == "*"
}

// Default is the policy used when there is no policy at all: every request is
// allowed and Secret values are masked.
func Default() *Policy {
	p := &Policy{APIVersion: APIVersion, Kind: Kind, DefaultAction: Allow, Source: "default",
		MaskSpecs: []MaskSpec{{Kinds: []string{"Secret"}}}}
	p.compiled = []*compiledRule{}
	return p
}

// Load reads and parses a policy file.
func Load(file string) (*Policy, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitedReader{r: f, n: maxPolicyBytes + 1}); err != nil {
		return nil, fmt.Errorf("reading policy %s: %w", file, err)
	}
	return Parse(buf.Bytes(), file)
}

type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxPolicyBytes)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// Parse decodes a policy file (YAML or JSON) strictly: unknown fields,
// duplicate keys, unknown verbs or actions and CEL that does not compile are
// errors that name the source, the rule (index and name) and the field.
func Parse(data []byte, source string) (*Policy, error) {
	if source == "" {
		source = "policy"
	}
	if len(data) > maxPolicyBytes {
		return nil, fmt.Errorf("%s: policy is larger than %d bytes", source, maxPolicyBytes)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not valid YAML or JSON: %w", source, err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, fmt.Errorf("%s: policy is empty (want apiVersion: %s, kind: %s)", source, APIVersion, Kind)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return nil, fmt.Errorf("%s: a policy must be a mapping with apiVersion, kind, defaultAction, rules and mask", source)
	}
	p := &Policy{Source: source}
	for k, v := range top {
		var err error
		switch k {
		case "apiVersion":
			err = json.Unmarshal(v, &p.APIVersion)
		case "kind":
			err = json.Unmarshal(v, &p.Kind)
		case "defaultAction":
			err = json.Unmarshal(v, &p.DefaultAction)
		case "rules", "mask":
			// below, element by element, so errors can name the element
		default:
			return nil, fmt.Errorf("%s: unknown field %q (use apiVersion, kind, defaultAction, rules, mask)", source, k)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", source, k, jsonErr(err))
		}
	}
	if p.APIVersion != APIVersion {
		return nil, fmt.Errorf("%s: apiVersion: %q is not supported (use %s)", source, p.APIVersion, APIVersion)
	}
	if p.Kind != Kind {
		return nil, fmt.Errorf("%s: kind: %q is not supported (use %s)", source, p.Kind, Kind)
	}
	switch p.DefaultAction {
	case "":
		p.DefaultAction = Allow
	case Allow, Deny:
	default:
		return nil, fmt.Errorf("%s: defaultAction: unknown action %q (use allow or deny)", source, p.DefaultAction)
	}

	if raw, ok := top["rules"]; ok && !isNull(raw) {
		var rules []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &rules); err != nil {
			return nil, fmt.Errorf("%s: rules: must be a list of rules: %v", source, jsonErr(err))
		}
		seen := map[string]int{}
		for i, m := range rules {
			r, err := decodeRule(m)
			where := fmt.Sprintf("%s: rules[%d]", source, i)
			if r.Name != "" {
				where += fmt.Sprintf(" %q", r.Name)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if err := r.validate(); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if j, dup := seen[r.Name]; dup {
				return nil, fmt.Errorf("%s: name: %q is already used by rules[%d] (rule names must be unique)", where, r.Name, j)
			}
			seen[r.Name] = i
			p.Rules = append(p.Rules, r)
		}
	}
	if raw, ok := top["mask"]; ok && !isNull(raw) {
		var masks []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &masks); err != nil {
			return nil, fmt.Errorf("%s: mask: must be a list of {kinds, keys}: %v", source, jsonErr(err))
		}
		for i, m := range masks {
			ms, err := decodeMask(m)
			if err != nil {
				return nil, fmt.Errorf("%s: mask[%d]: %w", source, i, err)
			}
			p.MaskSpecs = append(p.MaskSpecs, ms)
		}
	}
	if err := p.compile(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return p, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// jsonErr shortens encoding/json's messages ("json: cannot unmarshal number
// into Go value of type string") into something a person can act on.
func jsonErr(err error) string {
	var te *json.UnmarshalTypeError
	if e, ok := err.(*json.UnmarshalTypeError); ok {
		te = e
		want := te.Type.String()
		switch want {
		case "string", "policy.Action":
			want = "a string"
		case "[]string":
			want = "a list of strings"
		}
		return fmt.Sprintf("got %s, want %s", te.Value, want)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

var ruleFields = []string{"name", "action", "verbs", "apiGroups", "resources", "names", "namespaces", "when", "message"}

func decodeRule(m map[string]json.RawMessage) (Rule, error) {
	var r Rule
	// The name first, so that errors in other fields can name the rule.
	if v, ok := m["name"]; ok {
		if err := json.Unmarshal(v, &r.Name); err != nil {
			return r, fmt.Errorf("name: %s", jsonErr(err))
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		var dst any
		switch k {
		case "name":
			continue
		case "action":
			dst = &r.Action
		case "verbs":
			dst = &r.Verbs
		case "apiGroups":
			dst = &r.APIGroups
		case "resources":
			dst = &r.Resources
		case "names":
			dst = &r.Names
		case "namespaces":
			dst = &r.Namespaces
		case "when":
			dst = &r.When
		case "message":
			dst = &r.Message
		default:
			return r, fmt.Errorf("unknown field %q (use %s)", k, strings.Join(ruleFields, ", "))
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return r, fmt.Errorf("%s: %s", k, jsonErr(err))
		}
	}
	return r, nil
}

func decodeMask(m map[string]json.RawMessage) (MaskSpec, error) {
	var ms MaskSpec
	for k, v := range m {
		var err error
		switch k {
		case "kinds":
			err = json.Unmarshal(v, &ms.Kinds)
		case "keys":
			err = json.Unmarshal(v, &ms.Keys)
		default:
			return ms, fmt.Errorf("unknown field %q (use kinds, keys)", k)
		}
		if err != nil {
			return ms, fmt.Errorf("%s: %s", k, jsonErr(err))
		}
	}
	if len(ms.Kinds) == 0 {
		return ms, fmt.Errorf("kinds: at least one kind is required (for example [Secret])")
	}
	for _, k := range ms.Kinds {
		if k == "" {
			return ms, fmt.Errorf("kinds: empty kind")
		}
	}
	for j, k := range ms.Keys {
		if _, err := regexp.Compile(k); err != nil {
			return ms, fmt.Errorf("keys[%d]: not a valid regular expression: %v", j, err)
		}
	}
	return ms, nil
}

func (r *Rule) validate() error {
	if r.Name == "" {
		return fmt.Errorf("name: every rule needs a name (it is shown when the rule decides)")
	}
	switch r.Action {
	case Allow, Approve, Deny:
	case "":
		return fmt.Errorf("action: missing (use deny, approve or allow)")
	default:
		return fmt.Errorf("action: unknown action %q (use deny, approve or allow)", r.Action)
	}
	for i, v := range r.Verbs {
		lv := strings.ToLower(v)
		if !isKnownVerb(lv) {
			return fmt.Errorf("verbs: unknown verb %q (use %s, or *)", v, strings.Join(knownVerbs[:9], ", "))
		}
		r.Verbs[i] = lv
	}
	for i, g := range r.APIGroups {
		r.APIGroups[i] = strings.ToLower(g)
	}
	for i, res := range r.Resources {
		if res == "" {
			return fmt.Errorf("resources: empty resource (use a resource such as pods, pods/log, pods/*, */scale, * or a macro)")
		}
		if strings.HasPrefix(res, "@") {
			if _, ok := macros[res]; !ok {
				return fmt.Errorf("resources: unknown macro %q (use %s)", res, strings.Join(macroNames(), ", "))
			}
			continue
		}
		if strings.Count(res, "/") > 1 || strings.HasPrefix(res, "/") || strings.HasSuffix(res, "/") {
			return fmt.Errorf("resources: %q is not resource or resource/subresource", res)
		}
		r.Resources[i] = strings.ToLower(res)
	}
	for _, list := range []struct {
		field string
		vals  []string
	}{{"names", r.Names}, {"namespaces", r.Namespaces}} {
		for _, pat := range list.vals {
			if pat == "" {
				return fmt.Errorf("%s: empty pattern (use a name, a glob such as prod-*, or *)", list.field)
			}
			if _, err := path.Match(pat, ""); err != nil {
				return fmt.Errorf("%s: %q is not a valid glob: %v", list.field, pat, err)
			}
		}
	}
	return nil
}

// Mask returns the masking rules. Secret values are always masked: a policy
// can add masks but never remove that one.
func (p *Policy) Mask() []MaskRule {
	var out []MaskRule
	secret := false
	var add func(q *Policy)
	add = func(q *Policy) {
		for _, ms := range q.MaskSpecs {
			mr := MaskRule{Kinds: append([]string(nil), ms.Kinds...)}
			for _, k := range ms.Keys {
				mr.Keys = append(mr.Keys, regexp.MustCompile(k)) // validated in Parse
			}
			if mr.Keys == nil {
				for _, k := range mr.Kinds {
					if k == "Secret" {
						secret = true
					}
				}
			}
			out = append(out, mr)
		}
		for _, part := range q.parts {
			add(part)
		}
	}
	add(p)
	if !secret {
		out = append(out, MaskRule{Kinds: []string{"Secret"}})
	}
	return out
}

// Combine joins the broker's policy (base) and a local one. Local rules can
// only tighten: each policy is evaluated on its own and the strongest decision
// wins (deny > approve > allow), so the combined default is deny if either
// default is deny, and a local allow rule cannot override anything the base
// denies or holds. Masks are unioned. Either may be nil; both nil is Default().
func Combine(base, local *Policy) *Policy {
	switch {
	case base == nil && local == nil:
		return Default()
	case base == nil:
		return local
	case local == nil:
		return base
	}
	c := &Policy{APIVersion: APIVersion, Kind: Kind, DefaultAction: Allow,
		Source: base.Source + "+" + local.Source, parts: []*Policy{base, local}, compiled: []*compiledRule{}}
	if base.DefaultAction == Deny || local.DefaultAction == Deny {
		c.DefaultAction = Deny
	}
	return c
}

// AllRules lists every rule, including those of combined policies.
func (p *Policy) AllRules() []Rule {
	out := append([]Rule(nil), p.Rules...)
	for _, part := range p.parts {
		out = append(out, part.AllRules()...)
	}
	return out
}

// canonical is the form that Digest hashes.
type canonical struct {
	APIVersion    string       `json:"apiVersion"`
	Kind          string       `json:"kind"`
	DefaultAction Action       `json:"defaultAction"`
	Rules         []Rule       `json:"rules"`
	Mask          []MaskSpec   `json:"mask"`
	Parts         []*canonical `json:"parts,omitempty"`
}

func (p *Policy) canonical() *canonical {
	c := &canonical{APIVersion: APIVersion, Kind: Kind, DefaultAction: p.DefaultAction, Rules: []Rule{}, Mask: []MaskSpec{}}
	if c.DefaultAction == "" {
		c.DefaultAction = Allow
	}
	for _, r := range p.Rules {
		r.Verbs = normList(r.Verbs)
		r.APIGroups = normList(r.APIGroups)
		r.Resources = normList(r.Resources)
		r.Names = normList(r.Names)
		r.Namespaces = normList(r.Namespaces)
		c.Rules = append(c.Rules, r)
	}
	for _, m := range p.MaskSpecs {
		c.Mask = append(c.Mask, MaskSpec{Kinds: normList(m.Kinds), Keys: normList(m.Keys)})
	}
	for _, part := range p.parts {
		c.Parts = append(c.Parts, part.canonical())
	}
	return c
}

// normList sorts and de-duplicates a list whose order does not matter, and
// turns an empty list into nil (both mean "everything").
func normList(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := append([]string(nil), in...)
	sort.Strings(out)
	j := 0
	for i, s := range out {
		if i == 0 || s != out[j-1] {
			out[j] = s
			j++
		}
	}
	return out[:j]
}

// Digest is "sha256:<hex>" over a canonical JSON form of the policy (list
// order inside a rule and the source do not matter; rule order does not
// change decisions either but is kept, since messages name rules in order).
func (p *Policy) Digest() string {
	b, err := json.Marshal(p.canonical())
	if err != nil {
		// Only strings and slices of strings: Marshal cannot fail.
		panic(fmt.Sprintf("policy digest: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
