package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// MapOptions tell MapKubectl what it cannot know from argv alone.
type MapOptions struct {
	// DefaultNamespace is used without -n (normally the kubeconfig
	// context's namespace); "" means "default".
	DefaultNamespace string
	// ReadFile and ReadDir read -f and -k inputs; nil means the OS.
	ReadFile func(path string) ([]byte, error)
	ReadDir  func(path string) ([]fs.DirEntry, error)
	// Dir is the directory relative paths are read from ("" = current).
	Dir string
	// Warn, if set, receives notes about guesses (an unknown kind mapped
	// to its lower-case plural, say).
	Warn func(msg string)
}

// MappedRequest is one API request a kubectl command line would make.
type MappedRequest struct {
	Attributes
	Method      string `json:"method"`
	Description string `json:"description,omitempty"`
	// Object is the request body when the command line determines it (a
	// manifest from -f, a patch from -p, a generated object), for `when`.
	Object map[string]any `json:"-"`
}

// MapKubectl maps a kubectl command line (with or without the leading
// "kubectl") to the API requests it would make, without a cluster. It is a
// preview: discovery requests are left out, and where kubectl would first
// look names up (delete -l, --all, drain), the request carries no name,
// which policy rules read as "any name".
func MapKubectl(argv []string, opts MapOptions) ([]MappedRequest, error) {
	line := "kubectl " + strings.Join(argv, " ")
	if len(argv) > 0 && (argv[0] == "kubectl" || filepath.Base(argv[0]) == "kubectl") {
		argv = argv[1:]
		line = "kubectl " + strings.Join(argv, " ")
	}
	m := &mapper{opts: opts, table: newResourceTable()}
	reqs, err := m.run(argv)
	if err != nil {
		return nil, fmt.Errorf("cannot map %q: %w", line, err)
	}
	return reqs, nil
}

type mapper struct {
	opts        MapOptions
	table       *resourceTable
	p           *parsedArgs
	cmd         string
	namespace   string
	nsExplicit  bool
	allNS       bool
	dryRun      bool
	impersonate []string
	out         []MappedRequest
}

func (m *mapper) warn(format string, args ...any) {
	if m.opts.Warn != nil {
		m.opts.Warn(fmt.Sprintf(format, args...))
	}
}

// commandWord finds the subcommand: the first word that is not a global flag
// or a global flag's value.
func commandWord(argv []string) (int, error) {
	g := newFlagSet()
	for i := 0; i < len(argv); i++ {
		w := argv[i]
		if w == "--" {
			break
		}
		if !strings.HasPrefix(w, "-") || w == "-" {
			return i, nil
		}
		if strings.HasPrefix(w, "--") {
			name, _, hasVal := strings.Cut(w[2:], "=")
			if def, ok := g.long[name]; ok && def.value && !hasVal {
				i++
			}
			continue
		}
		if len(w) == 2 {
			if def, ok := g.short[w[1]]; ok && def.value {
				i++
			}
		}
	}
	return -1, errors.New("no kubectl subcommand")
}

func (m *mapper) run(argv []string) ([]MappedRequest, error) {
	ci, err := commandWord(argv)
	if err != nil {
		return nil, err
	}
	m.cmd = argv[ci]
	rest := append(append([]string(nil), argv[:ci]...), argv[ci+1:]...)
	m.p, err = newFlagSet(commandFlagOverrides[m.cmd]).parse(rest)
	if err != nil {
		return nil, err
	}
	m.namespace = m.opts.DefaultNamespace
	if v := m.p.str("namespace"); v != "" {
		m.namespace, m.nsExplicit = v, true
	}
	if m.namespace == "" {
		m.namespace = "default"
	}
	m.allNS = m.p.bool("all-namespaces")
	if v := m.p.str("dry-run"); v == "server" {
		m.dryRun = true
	}
	if v := m.p.str("as"); v != "" {
		m.impersonate = append(m.impersonate, "user:"+v)
	}
	for _, g := range m.p.flags["as-group"] {
		m.impersonate = append(m.impersonate, "group:"+g)
	}
	if v := m.p.str("as-uid"); v != "" {
		m.impersonate = append(m.impersonate, "uid:"+v)
	}
	if raw := m.p.str("raw"); raw != "" {
		return m.out, m.raw(raw)
	}
	if v := m.p.str("dry-run"); v == "client" || v == "true" || v == "unchanged" {
		m.warn("--dry-run=%s makes no changes on the server; the requests are shown as if it were not set", v)
	}
	h, ok := commandHandlers[m.cmd]
	if !ok {
		return nil, fmt.Errorf("unknown or unsupported subcommand %q (check maps get, describe, create, apply, replace, delete, patch, edit, label, annotate, scale, rollout, set, exec, attach, cp, port-forward, logs, run, debug, drain, cordon, uncordon, taint, expose, autoscale, auth, wait, top, diff, certificate and --raw)", m.cmd)
	}
	if err := h(m); err != nil {
		return nil, err
	}
	return m.out, nil
}

// commandHandlers maps kubectl subcommands to what they request.
var commandHandlers = map[string]func(*mapper) error{
	"get": (*mapper).get, "describe": (*mapper).describe, "create": (*mapper).create,
	"apply": (*mapper).apply, "replace": (*mapper).replace, "delete": (*mapper).delete,
	"patch": (*mapper).patch, "edit": (*mapper).edit, "label": (*mapper).labelOrAnnotate,
	"annotate": (*mapper).labelOrAnnotate, "scale": (*mapper).scale, "rollout": (*mapper).rollout,
	"set": (*mapper).set, "exec": (*mapper).exec, "attach": (*mapper).attach, "cp": (*mapper).cp,
	"port-forward": (*mapper).portForward, "logs": (*mapper).logs, "run": (*mapper).runPod,
	"debug": (*mapper).debug, "drain": (*mapper).drain, "cordon": (*mapper).cordon,
	"uncordon": (*mapper).cordon, "taint": (*mapper).taint, "expose": (*mapper).expose,
	"autoscale": (*mapper).autoscale, "auth": (*mapper).auth, "wait": (*mapper).wait,
	"top": (*mapper).top, "diff": (*mapper).diff, "certificate": (*mapper).certificate,
	"version": nonResource("/version"), "api-resources": nonResource("/apis"),
	"api-versions": nonResource("/apis"), "explain": nonResource("/openapi/v3"),
	"cluster-info": (*mapper).clusterInfo, "config": (*mapper).none, "completion": (*mapper).none,
	"kustomize": (*mapper).none, "plugin": (*mapper).none, "help": (*mapper).none, "options": (*mapper).none,
}

// ---- building requests ----

func methodFor(verb string) string {
	switch verb {
	case "create":
		return "POST"
	case "update":
		return "PUT"
	case "patch":
		return "PATCH"
	case "delete", "deletecollection":
		return "DELETE"
	}
	return "GET"
}

// add appends a request. ns is ignored for cluster-scoped resources; a
// namespace object is "in" itself, as ParsePath reports it.
func (m *mapper) add(verb string, ri resourceInfo, ns, name, sub, desc string, obj map[string]any) {
	a := Attributes{Verb: verb, APIGroup: ri.Group, APIVersion: ri.Version, Resource: ri.Resource,
		Subresource: sub, Name: name, ResourceRequest: true, DryRun: m.dryRun && isWrite(verb)}
	if ri.Namespaced {
		a.Namespace = ns
	}
	if ri.Group == "" && ri.Resource == "namespaces" {
		a.Namespace = name
	}
	if len(m.impersonate) > 0 {
		a.Impersonate = append([]string(nil), m.impersonate...)
	}
	pa := a
	if verb == "list" || verb == "watch" || verb == "deletecollection" || (verb == "create" && sub == "") {
		pa.Name, pa.Subresource = "", ""
	}
	a.Path = apiPath(pa)
	m.out = append(m.out, MappedRequest{Attributes: a, Method: methodFor(verb), Description: desc, Object: obj})
}

func isWrite(verb string) bool {
	switch verb {
	case "get", "list", "watch":
		return false
	}
	return true
}

func (m *mapper) ns() string {
	if m.allNS {
		return ""
	}
	return m.namespace
}

func (m *mapper) mustResource(arg string) (resourceInfo, error) { return m.table.lookup(arg) }

func (m *mapper) res(name string) resourceInfo {
	ri, err := m.table.lookup(name)
	if err != nil {
		panic("built-in resource missing from table: " + name)
	}
	return ri
}

// target is a resource type and the names given for it (none = all).
type target struct {
	ri    resourceInfo
	names []string
}

// targets reads kubectl's TYPE NAME..., TYPE1,TYPE2, TYPE/NAME ... forms.
func (m *mapper) targets(args []string, allowAll bool) ([]target, error) {
	if len(args) == 0 {
		return nil, nil
	}
	if strings.Contains(args[0], "/") {
		var out []target
		for _, a := range args {
			typ, name, ok := strings.Cut(a, "/")
			if !ok || typ == "" || name == "" {
				return nil, fmt.Errorf("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (%q)", a)
			}
			ri, err := m.mustResource(typ)
			if err != nil {
				return nil, err
			}
			out = append(out, target{ri: ri, names: []string{name}})
		}
		return out, nil
	}
	var out []target
	for _, typ := range strings.Split(args[0], ",") {
		if allowAll && strings.ToLower(typ) == "all" {
			for _, r := range []string{"pods", "services", "daemonsets", "deployments", "replicasets", "statefulsets", "replicationcontrollers", "horizontalpodautoscalers", "jobs", "cronjobs"} {
				out = append(out, target{ri: m.res(r), names: args[1:]})
			}
			continue
		}
		ri, err := m.mustResource(typ)
		if err != nil {
			return nil, err
		}
		out = append(out, target{ri: ri, names: args[1:]})
	}
	for _, n := range args[1:] {
		if strings.Contains(n, "/") {
			return nil, fmt.Errorf("arguments in resource/name form must have a single resource and name (%q)", n)
		}
	}
	return out, nil
}

// ---- manifests (-f, -k) ----

type object struct {
	ri   resourceInfo
	ns   string
	name string
	obj  map[string]any
}

func (m *mapper) path(p string) string {
	if filepath.IsAbs(p) || m.opts.Dir == "" {
		return p
	}
	return filepath.Join(m.opts.Dir, p)
}

func (m *mapper) readFile(p string) ([]byte, error) {
	if m.opts.ReadFile != nil {
		return m.opts.ReadFile(m.path(p))
	}
	return os.ReadFile(m.path(p))
}

func (m *mapper) readDir(p string) ([]fs.DirEntry, error) {
	if m.opts.ReadDir != nil {
		return m.opts.ReadDir(m.path(p))
	}
	return os.ReadDir(m.path(p))
}

func (m *mapper) manifests() ([]object, error) {
	var out []object
	for _, f := range m.p.flags["filename"] {
		objs, err := m.filenameObjects(f, m.p.bool("recursive"), true)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	for _, k := range m.p.flags["kustomize"] {
		objs, err := m.kustomize(k, "", 0)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

func (m *mapper) filenameObjects(f string, recursive, top bool) ([]object, error) {
	switch {
	case f == "-":
		return nil, errors.New("-f - (stdin) cannot be previewed; pass the file")
	case strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://"):
		return nil, fmt.Errorf("-f %s: URLs are not fetched by check; download the file and pass it", f)
	}
	entries, derr := m.readDir(f)
	if derr == nil {
		var out []object
		for _, e := range entries {
			child := filepath.Join(f, e.Name())
			if e.IsDir() {
				if recursive {
					objs, err := m.filenameObjects(child, recursive, false)
					if err != nil {
						return nil, err
					}
					out = append(out, objs...)
				}
				continue
			}
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				objs, err := m.fileObjects(child)
				if err != nil {
					return nil, err
				}
				out = append(out, objs...)
			}
		}
		return out, nil
	}
	return m.fileObjects(f)
}

func (m *mapper) fileObjects(f string) ([]object, error) {
	data, err := m.readFile(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f, err)
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f, err)
	}
	var out []object
	for i, d := range docs {
		objs, err := m.docObjects(d)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", f, i+1, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// splitDocuments splits a YAML stream (or one JSON document) into objects.
func splitDocuments(data []byte) ([]map[string]any, error) {
	var out []map[string]any
	for _, chunk := range splitYAML(data) {
		js, err := yaml.YAMLToJSON(chunk)
		if err != nil {
			return nil, err
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal(js, &obj); err != nil {
			return nil, fmt.Errorf("not an object: %w", err)
		}
		out = append(out, obj)
	}
	return out, nil
}

func splitYAML(data []byte) [][]byte {
	var out [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			out = append(out, append([]byte(nil), cur.Bytes()...))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(out, cur.Bytes())
}

func (m *mapper) docObjects(obj map[string]any) ([]object, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	if kind == "" || apiVersion == "" {
		return nil, errors.New("object has no apiVersion or kind")
	}
	if strings.HasSuffix(kind, "List") {
		items, _ := obj["items"].([]any)
		var out []object
		for _, it := range items {
			io, ok := it.(map[string]any)
			if !ok {
				return nil, errors.New("list item is not an object")
			}
			objs, err := m.docObjects(io)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	ri, known := m.table.byKind(apiVersion, kind)
	if !known {
		m.warn("unknown kind %s %s: assuming the namespaced resource %q", apiVersion, kind, ri.Resource)
	}
	md, _ := obj["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	ns, _ := md["namespace"].(string)
	if ns == "" {
		ns = m.namespace
	} else if m.nsExplicit && ns != m.namespace && ri.Namespaced {
		return nil, fmt.Errorf("the namespace from the object (%s) does not match -n %s", ns, m.namespace)
	}
	if name == "" {
		if gn, _ := md["generateName"].(string); gn == "" {
			return nil, fmt.Errorf("%s has no metadata.name", kind)
		}
	}
	return []object{{ri: ri, ns: ns, name: name, obj: obj}}, nil
}

// kustomize reads a kustomization's resources (plain files and nested
// kustomization directories; remote bases are refused) and applies its
// namespace: field. Generated ConfigMaps and Secrets are reported by name
// without their hash suffix.
func (m *mapper) kustomize(dir, outerNS string, depth int) ([]object, error) {
	if depth > 10 {
		return nil, fmt.Errorf("kustomization %s: nested too deep", dir)
	}
	var data []byte
	var err error
	for _, n := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if data, err = m.readFile(filepath.Join(dir, n)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("-k %s: no kustomization.yaml: %w", dir, err)
	}
	var k struct {
		Namespace          string   `json:"namespace"`
		Resources          []string `json:"resources"`
		Bases              []string `json:"bases"`
		ConfigMapGenerator []struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"configMapGenerator"`
		SecretGenerator []struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"secretGenerator"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("-k %s: kustomization.yaml: %w", dir, err)
	}
	ns := outerNS
	if ns == "" {
		ns = k.Namespace
	}
	var out []object
	for _, r := range append(append([]string(nil), k.Resources...), k.Bases...) {
		if strings.Contains(r, "://") || strings.HasPrefix(r, "github.com/") || strings.Contains(r, "?ref=") {
			return nil, fmt.Errorf("-k %s: remote resource %q is not fetched by check", dir, r)
		}
		p := filepath.Join(dir, r)
		var objs []object
		if _, derr := m.readDir(p); derr == nil {
			objs, err = m.kustomize(p, ns, depth+1)
		} else {
			objs, err = m.fileObjects(p)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	for _, g := range k.ConfigMapGenerator {
		out = append(out, object{ri: m.res("configmaps"), ns: firstNonEmpty(g.Namespace, m.namespace), name: g.Name})
	}
	for _, g := range k.SecretGenerator {
		out = append(out, object{ri: m.res("secrets"), ns: firstNonEmpty(g.Namespace, m.namespace), name: g.Name})
	}
	if ns != "" {
		for i := range out {
			if out[i].ri.Namespaced {
				out[i].ns = ns
			}
		}
	}
	return out, nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// ---- commands ----

func (m *mapper) none() error { return nil }

// nonResource is a command that only reads a non-resource URL.
func nonResource(p string) func(*mapper) error {
	return func(m *mapper) error {
		m.out = append(m.out, MappedRequest{Attributes: Attributes{Verb: "get", Path: p, Impersonate: m.impersonate}, Method: "GET", Description: m.cmd})
		return nil
	}
}

func (m *mapper) raw(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return fmt.Errorf("--raw %q is not an absolute request path", raw)
	}
	method := map[string]string{"get": "GET", "create": "POST", "replace": "PUT", "delete": "DELETE", "apply": "PATCH"}[m.cmd]
	if method == "" {
		return fmt.Errorf("--raw is not supported by kubectl %s", m.cmd)
	}
	escaped := raw
	if i := strings.IndexByte(escaped, '?'); i >= 0 {
		escaped = escaped[:i]
	}
	if err := CanonicalPath(escaped); err != nil {
		return err
	}
	a, err := ParsePath(method, u.Path, u.Query())
	if err != nil {
		return err
	}
	a.Impersonate = m.impersonate
	var obj map[string]any
	if method != "GET" && method != "DELETE" {
		if objs, err := m.manifests(); err == nil && len(objs) == 1 {
			obj = objs[0].obj
		}
	}
	m.out = append(m.out, MappedRequest{Attributes: a, Method: method, Description: "raw " + method + " " + raw, Object: obj})
	return nil
}

func (m *mapper) get() error {
	if m.p.has("filename") || m.p.has("kustomize") {
		objs, err := m.manifests()
		if err != nil {
			return err
		}
		for _, o := range objs {
			m.add("get", o.ri, o.ns, o.name, m.p.str("subresource"), "get "+o.ri.Resource+" "+o.name, nil)
		}
		return nil
	}
	return m.readTargets(true)
}

// readTargets handles get-like reads: named gets, or a list; -w adds watches.
func (m *mapper) readTargets(allowAll bool) error {
	ts, err := m.targets(m.p.args, allowAll)
	if err != nil {
		return err
	}
	if len(ts) == 0 {
		return fmt.Errorf("you must specify the type of resource to %s", m.cmd)
	}
	watch := m.p.bool("watch") || m.p.bool("watch-only")
	sub := m.p.str("subresource")
	for _, t := range ts {
		if len(t.names) == 0 {
			if !m.p.bool("watch-only") {
				m.add("list", t.ri, m.ns(), "", "", m.cmd+" "+t.ri.Resource, nil)
			}
			if watch {
				m.add("watch", t.ri, m.ns(), "", "", "watch "+t.ri.Resource, nil)
			}
			continue
		}
		for _, n := range t.names {
			if !m.p.bool("watch-only") {
				m.add("get", t.ri, m.namespace, n, sub, m.cmd+" "+t.ri.Resource+" "+n, nil)
			}
			if watch {
				m.add("watch", t.ri, m.namespace, n, "", "watch "+t.ri.Resource+" "+n, nil)
			}
		}
	}
	return nil
}

func (m *mapper) describe() error {
	if m.p.has("filename") || m.p.has("kustomize") {
		objs, err := m.manifests()
		if err != nil {
			return err
		}
		for _, o := range objs {
			m.add("get", o.ri, o.ns, o.name, "", "describe "+o.ri.Resource+" "+o.name, nil)
		}
	} else {
		ts, err := m.targets(m.p.args, false)
		if err != nil {
			return err
		}
		if len(ts) == 0 {
			return errors.New("you must specify the type of resource to describe")
		}
		for _, t := range ts {
			if len(t.names) == 0 {
				m.add("list", t.ri, m.ns(), "", "", "describe "+t.ri.Resource, nil)
			}
			for _, n := range t.names {
				// kubectl describe NAME matches by prefix: it lists when the get fails.
				m.add("get", t.ri, m.namespace, n, "", "describe "+t.ri.Resource+" "+n, nil)
			}
		}
	}
	if m.p.str("show-events") != "false" {
		m.add("list", m.res("events"), m.ns(), "", "", "events of the described objects", nil)
	}
	return nil
}

func (m *mapper) create() error {
	if m.p.has("filename") || m.p.has("kustomize") {
		objs, err := m.manifests()
		if err != nil {
			return err
		}
		for _, o := range objs {
			m.add("create", o.ri, o.ns, o.name, "", "create "+o.ri.Resource+" "+o.name, o.obj)
		}
		return nil
	}
	if len(m.p.args) == 0 {
		return errors.New("kubectl create needs -f FILE or a type (namespace, deployment, secret, ...)")
	}
	typ, args := m.p.args[0], m.p.args[1:]
	name := ""
	if len(args) > 0 {
		name = args[0]
	}
	gen := func(resource string, obj map[string]any) error {
		if name == "" {
			return fmt.Errorf("kubectl create %s needs a NAME", typ)
		}
		ri := m.res(resource)
		md := map[string]any{"name": name}
		if ri.Namespaced {
			md["namespace"] = m.namespace
		}
		if obj == nil {
			obj = map[string]any{}
		}
		obj["apiVersion"] = strings.TrimPrefix(ri.Group+"/"+ri.Version, "/")
		obj["kind"] = ri.Kind
		obj["metadata"] = md
		m.add("create", ri, m.namespace, name, "", "create "+ri.Resource+" "+name, obj)
		return nil
	}
	switch strings.ToLower(typ) {
	case "namespace", "ns":
		return gen("namespaces", nil)
	case "deployment", "deploy":
		return gen("deployments", nil)
	case "configmap", "cm":
		return gen("configmaps", nil)
	case "serviceaccount", "sa":
		return gen("serviceaccounts", nil)
	case "job":
		if from := m.p.str("from"); from != "" {
			if typ, n, ok := strings.Cut(from, "/"); ok {
				ri, err := m.mustResource(typ)
				if err != nil {
					return err
				}
				m.add("get", ri, m.namespace, n, "", "read "+from, nil)
			}
		}
		return gen("jobs", nil)
	case "cronjob", "cj":
		return gen("cronjobs", nil)
	case "role":
		return gen("roles", nil)
	case "clusterrole":
		return gen("clusterroles", nil)
	case "rolebinding", "clusterrolebinding":
		kind, ref := "ClusterRole", m.p.str("clusterrole")
		if r := m.p.str("role"); r != "" {
			kind, ref = "Role", r
		}
		var subjects []any
		for _, u := range m.p.flags["user"] {
			subjects = append(subjects, map[string]any{"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"})
		}
		for _, g := range m.p.flags["group"] {
			subjects = append(subjects, map[string]any{"kind": "Group", "name": g, "apiGroup": "rbac.authorization.k8s.io"})
		}
		for _, s := range m.p.flags["serviceaccount"] {
			ns, n, _ := strings.Cut(s, ":")
			subjects = append(subjects, map[string]any{"kind": "ServiceAccount", "name": n, "namespace": ns})
		}
		obj := map[string]any{"roleRef": map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": ref}, "subjects": subjects}
		if strings.ToLower(typ) == "rolebinding" {
			return gen("rolebindings", obj)
		}
		return gen("clusterrolebindings", obj)
	case "quota", "resourcequota":
		return gen("resourcequotas", nil)
	case "priorityclass", "pc":
		return gen("priorityclasses", nil)
	case "poddisruptionbudget", "pdb":
		return gen("poddisruptionbudgets", nil)
	case "ingress", "ing":
		return gen("ingresses", nil)
	case "secret", "service", "svc":
		// create secret generic|tls|docker-registry NAME; create service clusterip|... NAME
		if len(args) < 2 {
			return fmt.Errorf("kubectl create %s needs a kind and a NAME", typ)
		}
		name = args[1]
		if strings.HasPrefix(strings.ToLower(typ), "s") && strings.ToLower(typ) == "secret" {
			return gen("secrets", nil)
		}
		return gen("services", nil)
	case "token":
		if name == "" {
			return errors.New("kubectl create token needs a service account NAME")
		}
		m.add("create", m.res("serviceaccounts"), m.namespace, name, "token", "create a token for serviceaccount "+name, nil)
		return nil
	}
	return fmt.Errorf("kubectl create %s is not supported by check (use -f FILE)", typ)
}

func (m *mapper) objectsOrTargets(verbForTargets func(t target, name string)) ([]object, error) {
	if m.p.has("filename") || m.p.has("kustomize") {
		return m.manifests()
	}
	ts, err := m.targets(m.p.args, false)
	if err != nil {
		return nil, err
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("you must specify a resource (TYPE NAME, TYPE/NAME or -f FILE) to %s", m.cmd)
	}
	for _, t := range ts {
		names := t.names
		if len(names) == 0 {
			if !(m.p.bool("all") || m.p.has("selector") || m.p.has("field-selector")) {
				return nil, fmt.Errorf("resource(s) were provided, but no name was specified (give a NAME, -l SELECTOR or --all)")
			}
			m.add("list", t.ri, m.ns(), "", "", "find "+t.ri.Resource+" to "+m.cmd, nil)
			names = []string{""} // unknown names: rules read "" as any name
		}
		for _, n := range names {
			verbForTargets(t, n)
		}
	}
	return nil, nil
}

func (m *mapper) apply() error {
	if len(m.p.args) > 0 {
		switch m.p.args[0] {
		case "view-last-applied", "edit-last-applied", "set-last-applied":
			return m.applySub()
		}
	}
	objs, err := m.manifests()
	if err != nil {
		return err
	}
	if len(objs) == 0 && !m.p.has("filename") && !m.p.has("kustomize") {
		return errors.New("kubectl apply needs -f FILE or -k DIR")
	}
	ssa := m.p.bool("server-side")
	for _, o := range objs {
		if ssa {
			m.add("patch", o.ri, o.ns, o.name, "", "server-side apply "+o.ri.Resource+" "+o.name, o.obj)
			continue
		}
		m.add("get", o.ri, o.ns, o.name, "", "apply: read "+o.ri.Resource+" "+o.name, nil)
		m.add("patch", o.ri, o.ns, o.name, "", "apply: patch "+o.ri.Resource+" "+o.name, o.obj)
		m.add("create", o.ri, o.ns, o.name, "", "apply: create "+o.ri.Resource+" "+o.name+" if absent", o.obj)
	}
	if m.p.bool("prune") {
		prune := []string{"configmaps", "endpoints", "namespaces", "persistentvolumeclaims", "persistentvolumes", "pods", "replicationcontrollers", "secrets", "services", "jobs", "cronjobs", "ingresses", "daemonsets", "deployments", "replicasets", "statefulsets"}
		var ris []resourceInfo
		if al := append(m.p.flags["prune-allowlist"], m.p.flags["prune-whitelist"]...); len(al) > 0 {
			for _, gvk := range al { // group/version/Kind, core/v1/ConfigMap
				parts := strings.Split(gvk, "/")
				if len(parts) != 3 {
					return fmt.Errorf("--prune-allowlist %q is not group/version/Kind", gvk)
				}
				g := parts[0]
				if g == "core" {
					g = ""
				}
				ri, _ := m.table.byKind(strings.TrimPrefix(g+"/"+parts[1], "/"), parts[2])
				ris = append(ris, ri)
			}
		} else {
			for _, r := range prune {
				ris = append(ris, m.res(r))
			}
		}
		nss := map[string]bool{}
		for _, o := range objs {
			if o.ri.Namespaced {
				nss[o.ns] = true
			}
		}
		if len(nss) == 0 {
			nss[m.namespace] = true
		}
		var nsl []string
		for n := range nss {
			nsl = append(nsl, n)
		}
		sort.Strings(nsl)
		for _, ri := range ris {
			for _, ns := range nsl {
				m.add("list", ri, ns, "", "", "prune: find "+ri.Resource, nil)
				m.add("delete", ri, ns, "", "", "prune: delete "+ri.Resource+" no longer in the manifests", nil)
				if !ri.Namespaced {
					break
				}
			}
		}
	}
	return nil
}

func (m *mapper) applySub() error {
	sub := m.p.args[0]
	m.p.args = m.p.args[1:]
	_, err := m.objectsOrTargets(func(t target, n string) {
		m.add("get", t.ri, m.namespace, n, "", "apply "+sub+" "+t.ri.Resource+" "+n, nil)
		if sub != "view-last-applied" {
			m.add("patch", t.ri, m.namespace, n, "", "apply "+sub+" "+t.ri.Resource+" "+n, nil)
		}
	})
	return err
}

func (m *mapper) replace() error {
	objs, err := m.manifests()
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return errors.New("kubectl replace needs -f FILE")
	}
	for _, o := range objs {
		if m.p.bool("force") {
			m.add("delete", o.ri, o.ns, o.name, "", "replace --force: delete "+o.ri.Resource+" "+o.name, nil)
			m.add("create", o.ri, o.ns, o.name, "", "replace --force: create "+o.ri.Resource+" "+o.name, o.obj)
			continue
		}
		m.add("update", o.ri, o.ns, o.name, "", "replace "+o.ri.Resource+" "+o.name, o.obj)
	}
	return nil
}

func (m *mapper) delete() error {
	objs, err := m.objectsOrTargets(func(t target, n string) {
		desc := "delete " + t.ri.Resource + " " + n
		if n == "" {
			desc = "delete every matching " + t.ri.Resource
			m.add("delete", t.ri, m.ns(), "", "", desc, nil)
			return
		}
		m.add("delete", t.ri, m.namespace, n, "", desc, nil)
	})
	if err != nil {
		return err
	}
	for _, o := range objs {
		m.add("delete", o.ri, o.ns, o.name, "", "delete "+o.ri.Resource+" "+o.name, nil)
	}
	return nil
}

// patchBody decodes -p (JSON or YAML) for `when`; a merge patch or strategic
// merge patch reads like the object it changes.
func (m *mapper) patchBody() map[string]any {
	var body []byte
	if p := m.p.str("patch"); p != "" {
		body = []byte(p)
	} else if f := m.p.str("patch-file"); f != "" {
		b, err := m.readFile(f)
		if err != nil {
			return nil
		}
		body = b
	}
	if body == nil {
		return nil
	}
	var obj map[string]any
	if err := yaml.Unmarshal(body, &obj); err != nil {
		return nil
	}
	return obj
}

func (m *mapper) patch() error {
	if !m.p.has("patch") && !m.p.has("patch-file") {
		return errors.New("kubectl patch needs -p PATCH or --patch-file FILE")
	}
	body := m.patchBody()
	sub := m.p.str("subresource")
	objs, err := m.objectsOrTargets(func(t target, n string) {
		if m.p.bool("local") {
			return
		}
		m.add("patch", t.ri, m.namespace, n, sub, "patch "+t.ri.Resource+" "+n, body)
	})
	for _, o := range objs {
		if !m.p.bool("local") {
			m.add("patch", o.ri, o.ns, o.name, sub, "patch "+o.ri.Resource+" "+o.name, body)
		}
	}
	return err
}

func (m *mapper) edit() error {
	objs, err := m.objectsOrTargets(func(t target, n string) {
		m.add("get", t.ri, m.namespace, n, "", "edit: read "+t.ri.Resource+" "+n, nil)
		m.add("patch", t.ri, m.namespace, n, "", "edit: save "+t.ri.Resource+" "+n, nil)
	})
	for _, o := range objs {
		m.add("get", o.ri, o.ns, o.name, "", "edit: read "+o.ri.Resource+" "+o.name, nil)
		m.add("patch", o.ri, o.ns, o.name, "", "edit: save "+o.ri.Resource+" "+o.name, nil)
	}
	return err
}

func (m *mapper) labelOrAnnotate() error {
	// Positional arguments are TYPE NAME... or TYPE/NAME... followed by
	// KEY=VALUE or KEY- changes.
	var res []string
	for _, a := range m.p.args {
		if strings.Contains(a, "=") || strings.HasSuffix(a, "-") {
			continue
		}
		res = append(res, a)
	}
	m.p.args = res
	objs, err := m.objectsOrTargets(func(t target, n string) {
		if m.p.bool("local") {
			return
		}
		if n != "" {
			m.add("get", t.ri, m.namespace, n, "", m.cmd+": read "+t.ri.Resource+" "+n, nil)
		}
		m.add("patch", t.ri, m.ns(), n, "", m.cmd+" "+t.ri.Resource+" "+n, nil)
	})
	for _, o := range objs {
		if !m.p.bool("local") {
			m.add("get", o.ri, o.ns, o.name, "", m.cmd+": read "+o.ri.Resource+" "+o.name, nil)
			m.add("patch", o.ri, o.ns, o.name, "", m.cmd+" "+o.ri.Resource+" "+o.name, nil)
		}
	}
	return err
}

func (m *mapper) scale() error {
	objs, err := m.objectsOrTargets(func(t target, n string) {
		m.add("patch", t.ri, m.namespace, n, "scale", "scale "+t.ri.Resource+" "+n, nil)
	})
	for _, o := range objs {
		m.add("patch", o.ri, o.ns, o.name, "scale", "scale "+o.ri.Resource+" "+o.name, nil)
	}
	return err
}

func (m *mapper) rollout() error {
	if len(m.p.args) == 0 {
		return errors.New("kubectl rollout needs a subcommand (restart, undo, pause, resume, status, history)")
	}
	sub := m.p.args[0]
	m.p.args = m.p.args[1:]
	each := func(t target, n string) {
		switch sub {
		case "restart", "pause", "resume":
			m.add("get", t.ri, m.namespace, n, "", "rollout "+sub+": read "+t.ri.Resource+" "+n, nil)
			m.add("patch", t.ri, m.namespace, n, "", "rollout "+sub+" "+t.ri.Resource+" "+n, nil)
		case "undo":
			m.add("get", t.ri, m.namespace, n, "", "rollout undo: read "+t.ri.Resource+" "+n, nil)
			m.add("list", m.res("replicasets"), m.namespace, "", "", "rollout undo: find revisions", nil)
			m.add("patch", t.ri, m.namespace, n, "", "rollout undo "+t.ri.Resource+" "+n, nil)
		case "status":
			m.add("get", t.ri, m.namespace, n, "", "rollout status "+t.ri.Resource+" "+n, nil)
			if m.p.str("watch") != "false" {
				m.add("watch", t.ri, m.namespace, n, "", "rollout status: watch "+t.ri.Resource+" "+n, nil)
			}
		case "history":
			m.add("get", t.ri, m.namespace, n, "", "rollout history "+t.ri.Resource+" "+n, nil)
			m.add("list", m.res("replicasets"), m.namespace, "", "", "rollout history: revisions", nil)
		}
	}
	switch sub {
	case "restart", "pause", "resume", "undo", "status", "history":
	default:
		return fmt.Errorf("unknown rollout subcommand %q (use restart, undo, pause, resume, status, history)", sub)
	}
	objs, err := m.objectsOrTargets(each)
	for _, o := range objs {
		each(target{ri: o.ri}, o.name)
	}
	return err
}

func (m *mapper) set() error {
	if len(m.p.args) == 0 {
		return errors.New("kubectl set needs a subcommand (image, env, resources, serviceaccount, selector, subject)")
	}
	sub := m.p.args[0]
	var res []string
	for _, a := range m.p.args[1:] {
		if strings.Contains(a, "=") || (sub == "env" && strings.HasSuffix(a, "-")) {
			continue // container=image, KEY=VALUE, KEY-
		}
		res = append(res, a)
	}
	if sub == "serviceaccount" || sub == "selector" {
		if len(res) > 0 {
			res = res[:len(res)-1] // the last argument is the service account / selector
		}
	}
	m.p.args = res
	if sub == "env" {
		if from := m.p.str("from"); from != "" {
			typ, n, ok := strings.Cut(from, "/")
			if !ok {
				return fmt.Errorf("--from %q is not TYPE/NAME", from)
			}
			ri, err := m.mustResource(typ)
			if err != nil {
				return err
			}
			m.add("get", ri, m.namespace, n, "", "set env: read "+from, nil)
		}
	}
	each := func(t target, n string) {
		if n != "" {
			m.add("get", t.ri, m.namespace, n, "", "set "+sub+": read "+t.ri.Resource+" "+n, nil)
		}
		if !m.p.bool("local") && !(sub == "env" && m.p.bool("list")) {
			m.add("patch", t.ri, m.ns(), n, "", "set "+sub+" "+t.ri.Resource+" "+n, nil)
		}
	}
	switch sub {
	case "image", "env", "resources", "serviceaccount", "sa", "selector", "subject":
	default:
		return fmt.Errorf("unknown set subcommand %q (use image, env, resources, serviceaccount, selector, subject)", sub)
	}
	objs, err := m.objectsOrTargets(each)
	for _, o := range objs {
		each(target{ri: o.ri}, o.name)
	}
	return err
}

// podTarget reads POD, pod/NAME, or TYPE/NAME (deploy/x, svc/x: kubectl
// then picks one of its pods, whose name check cannot know).
func (m *mapper) podTarget(arg, verb string) (string, error) {
	typ, name, ok := strings.Cut(arg, "/")
	if !ok {
		m.add("get", m.res("pods"), m.namespace, arg, "", verb+": read pod "+arg, nil)
		return arg, nil
	}
	ri, err := m.mustResource(typ)
	if err != nil {
		return "", err
	}
	m.add("get", ri, m.namespace, name, "", verb+": read "+ri.Resource+" "+name, nil)
	if ri.Group == "" && ri.Resource == "pods" {
		return name, nil
	}
	m.add("list", m.res("pods"), m.namespace, "", "", verb+": find a pod of "+arg, nil)
	return "", nil
}

func (m *mapper) exec() error {
	pod := m.p.str("pod")
	args := m.p.args
	if pod == "" {
		if len(args) == 0 {
			return errors.New("kubectl exec needs a POD (or TYPE/NAME) and -- COMMAND")
		}
		pod, args = args[0], args[1:]
	}
	cmd := append(append([]string(nil), args...), m.p.dashArg...)
	name, err := m.podTarget(pod, "exec")
	if err != nil {
		return err
	}
	m.add("create", m.res("pods"), m.namespace, name, "exec", "exec in pod "+pod+": "+strings.Join(cmd, " "), nil)
	m.out[len(m.out)-1].Command = cmd
	return nil
}

func (m *mapper) attach() error {
	if len(m.p.args) == 0 {
		return errors.New("kubectl attach needs a POD (or TYPE/NAME)")
	}
	name, err := m.podTarget(m.p.args[0], "attach")
	if err != nil {
		return err
	}
	m.add("create", m.res("pods"), m.namespace, name, "attach", "attach to pod "+m.p.args[0], nil)
	return nil
}

func (m *mapper) cp() error {
	if len(m.p.args) != 2 {
		return errors.New("kubectl cp needs SRC and DEST, one of them [NAMESPACE/]POD:PATH")
	}
	remote := func(s string) (ns, pod, p string, ok bool) {
		before, after, found := strings.Cut(s, ":")
		if !found || before == "" || strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
			return "", "", "", false
		}
		ns = m.namespace
		if n, po, ok := strings.Cut(before, "/"); ok {
			ns, before = n, po
		}
		return ns, before, after, true
	}
	src, dst := m.p.args[0], m.p.args[1]
	var cmd []string
	ns, pod, p, ok := remote(src)
	if ok {
		cmd = []string{"tar", "cf", "-", p}
	} else if ns, pod, p, ok = remote(dst); ok {
		cmd = []string{"tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", p}
	} else {
		return errors.New("kubectl cp: neither SRC nor DEST is a [NAMESPACE/]POD:PATH")
	}
	saved := m.namespace
	m.namespace = ns
	m.add("create", m.res("pods"), ns, pod, "exec", "cp (exec tar) in pod "+ns+"/"+pod, nil)
	m.out[len(m.out)-1].Command = cmd
	m.namespace = saved
	return nil
}

func (m *mapper) portForward() error {
	args := m.p.args
	target := m.p.str("pod")
	if target == "" {
		if len(args) == 0 {
			return errors.New("kubectl port-forward needs TYPE/NAME and ports")
		}
		target = args[0]
	}
	name, err := m.podTarget(target, "port-forward")
	if err != nil {
		return err
	}
	m.add("create", m.res("pods"), m.namespace, name, "portforward", "port-forward to "+target, nil)
	return nil
}

func (m *mapper) logs() error {
	if len(m.p.args) == 0 && !m.p.has("selector") {
		return errors.New("kubectl logs needs a POD, TYPE/NAME or -l SELECTOR")
	}
	name := ""
	if len(m.p.args) > 0 {
		var err error
		if name, err = m.podTarget(m.p.args[0], "logs"); err != nil {
			return err
		}
	} else {
		m.add("list", m.res("pods"), m.namespace, "", "", "logs: find pods", nil)
	}
	desc := "read logs"
	if m.p.bool("follow") {
		desc = "stream logs"
	}
	m.add("get", m.res("pods"), m.namespace, name, "log", desc, nil)
	return nil
}

func (m *mapper) runPod() error {
	if len(m.p.args) == 0 {
		return errors.New("kubectl run needs a NAME and --image")
	}
	name := m.p.args[0]
	obj := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": name, "namespace": m.namespace},
		"spec": map[string]any{"containers": []any{map[string]any{"name": name, "image": m.p.str("image")}}}}
	m.add("create", m.res("pods"), m.namespace, name, "", "run pod "+name, obj)
	if m.p.bool("stdin") || m.p.bool("tty") || m.p.bool("attach") {
		m.add("watch", m.res("pods"), m.namespace, name, "", "wait for pod "+name, nil)
		m.add("create", m.res("pods"), m.namespace, name, "attach", "attach to pod "+name, nil)
	}
	if m.p.bool("rm") {
		m.add("delete", m.res("pods"), m.namespace, name, "", "delete pod "+name+" (--rm)", nil)
	}
	return nil
}

func (m *mapper) debug() error {
	if len(m.p.args) == 0 {
		return errors.New("kubectl debug needs a POD or node/NAME")
	}
	arg := m.p.args[0]
	typ, name, ok := strings.Cut(arg, "/")
	if !ok {
		typ, name = "pods", arg
	}
	ri, err := m.mustResource(typ)
	if err != nil {
		return err
	}
	interactive := m.p.bool("stdin") || m.p.bool("tty") || m.p.bool("attach")
	switch {
	case ri.Resource == "nodes":
		m.add("get", ri, "", name, "", "debug: read node "+name, nil)
		pod := "node-debugger-" + name
		m.add("create", m.res("pods"), m.namespace, "", "", "debug: create a privileged pod on node "+name, map[string]any{
			"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"generateName": pod + "-", "namespace": m.namespace},
			"spec": map[string]any{"nodeName": name, "hostPID": true, "hostNetwork": true}})
		if interactive {
			m.add("create", m.res("pods"), m.namespace, "", "attach", "debug: attach to the node debugger pod", nil)
		}
	case m.p.has("copy-to"):
		m.add("get", m.res("pods"), m.namespace, name, "", "debug: read pod "+name, nil)
		cp := m.p.str("copy-to")
		if m.p.bool("replace") {
			m.add("delete", m.res("pods"), m.namespace, cp, "", "debug: replace pod "+cp, nil)
		}
		m.add("create", m.res("pods"), m.namespace, cp, "", "debug: create copy "+cp+" of pod "+name, nil)
		if interactive {
			m.add("create", m.res("pods"), m.namespace, cp, "attach", "debug: attach to "+cp, nil)
		}
	default:
		podName := name
		if ri.Resource != "pods" {
			m.add("get", ri, m.namespace, name, "", "debug: read "+arg, nil)
			m.add("list", m.res("pods"), m.namespace, "", "", "debug: find a pod of "+arg, nil)
			podName = ""
		} else {
			m.add("get", m.res("pods"), m.namespace, name, "", "debug: read pod "+name, nil)
		}
		m.add("patch", m.res("pods"), m.namespace, podName, "ephemeralcontainers", "debug: add an ephemeral container to pod "+name, nil)
		if interactive {
			m.add("create", m.res("pods"), m.namespace, podName, "attach", "debug: attach to the ephemeral container", nil)
		}
	}
	return nil
}

func (m *mapper) drain() error {
	if len(m.p.args) == 0 && !m.p.has("selector") {
		return errors.New("kubectl drain needs a NODE")
	}
	nodes := m.p.args
	if len(nodes) == 0 {
		m.add("list", m.res("nodes"), "", "", "", "drain: find nodes", nil)
		nodes = []string{""}
	}
	for _, n := range nodes {
		m.add("get", m.res("nodes"), "", n, "", "drain: read node "+n, nil)
		m.add("patch", m.res("nodes"), "", n, "", "drain: cordon node "+n, nil)
	}
	saved := m.namespace
	m.namespace = ""
	pods := m.res("pods")
	m.add("list", pods, "", "", "", "drain: find pods on the node(s) in every namespace", nil)
	if m.p.bool("disable-eviction") {
		m.add("delete", pods, "", "", "", "drain: delete the pods", nil)
	} else {
		m.add("create", pods, "", "", "eviction", "drain: evict the pods", nil)
	}
	m.namespace = saved
	return nil
}

func (m *mapper) cordon() error {
	if len(m.p.args) == 0 {
		return fmt.Errorf("kubectl %s needs a NODE", m.cmd)
	}
	for _, n := range m.p.args {
		m.add("get", m.res("nodes"), "", n, "", m.cmd+": read node "+n, nil)
		m.add("patch", m.res("nodes"), "", n, "", m.cmd+" node "+n, nil)
	}
	return nil
}

func (m *mapper) taint() error {
	var nodes []string
	for i, a := range m.p.args {
		if i == 0 && (a == "nodes" || a == "node" || a == "no") {
			continue
		}
		if strings.Contains(a, "=") || strings.Contains(a, ":") || strings.HasSuffix(a, "-") {
			continue
		}
		nodes = append(nodes, strings.TrimPrefix(strings.TrimPrefix(a, "nodes/"), "node/"))
	}
	if len(nodes) == 0 {
		return errors.New("kubectl taint needs nodes NODE KEY=VALUE:EFFECT")
	}
	for _, n := range nodes {
		m.add("get", m.res("nodes"), "", n, "", "taint: read node "+n, nil)
		m.add("patch", m.res("nodes"), "", n, "", "taint node "+n, nil)
	}
	return nil
}

func (m *mapper) expose() error {
	objs, err := m.objectsOrTargets(func(t target, n string) {
		m.add("get", t.ri, m.namespace, n, "", "expose: read "+t.ri.Resource+" "+n, nil)
		m.add("create", m.res("services"), m.namespace, firstNonEmpty(m.p.str("name"), n), "", "expose: create service", nil)
	})
	for _, o := range objs {
		m.add("get", o.ri, o.ns, o.name, "", "expose: read "+o.ri.Resource+" "+o.name, nil)
		m.add("create", m.res("services"), o.ns, firstNonEmpty(m.p.str("name"), o.name), "", "expose: create service", nil)
	}
	return err
}

func (m *mapper) autoscale() error {
	objs, err := m.objectsOrTargets(func(t target, n string) {
		m.add("get", t.ri, m.namespace, n, "", "autoscale: read "+t.ri.Resource+" "+n, nil)
		m.add("create", m.res("horizontalpodautoscalers"), m.namespace, firstNonEmpty(m.p.str("name"), n), "", "autoscale: create hpa", nil)
	})
	for _, o := range objs {
		m.add("create", m.res("horizontalpodautoscalers"), o.ns, firstNonEmpty(m.p.str("name"), o.name), "", "autoscale: create hpa", nil)
	}
	return err
}

func (m *mapper) auth() error {
	if len(m.p.args) == 0 {
		return errors.New("kubectl auth needs a subcommand (can-i, whoami, reconcile)")
	}
	switch m.p.args[0] {
	case "can-i":
		if m.p.bool("list") {
			m.add("create", m.res("selfsubjectrulesreviews"), "", "", "", "auth can-i --list", nil)
			return nil
		}
		m.add("create", m.res("selfsubjectaccessreviews"), "", "", "", "auth can-i "+strings.Join(m.p.args[1:], " "), nil)
	case "whoami":
		m.add("create", m.res("selfsubjectreviews"), "", "", "", "auth whoami", nil)
	case "reconcile":
		objs, err := m.manifests()
		if err != nil {
			return err
		}
		for _, o := range objs {
			m.add("get", o.ri, o.ns, o.name, "", "auth reconcile: read "+o.ri.Resource+" "+o.name, nil)
			m.add("create", o.ri, o.ns, o.name, "", "auth reconcile: create "+o.ri.Resource+" "+o.name+" if absent", o.obj)
			m.add("update", o.ri, o.ns, o.name, "", "auth reconcile: update "+o.ri.Resource+" "+o.name, o.obj)
		}
	default:
		return fmt.Errorf("unknown auth subcommand %q (use can-i, whoami, reconcile)", m.p.args[0])
	}
	return nil
}

func (m *mapper) wait() error {
	objs, err := m.objectsOrTargets(func(t target, n string) {
		m.add("get", t.ri, m.namespace, n, "", "wait: read "+t.ri.Resource+" "+n, nil)
		m.add("watch", t.ri, m.ns(), n, "", "wait: watch "+t.ri.Resource+" "+n, nil)
	})
	for _, o := range objs {
		m.add("get", o.ri, o.ns, o.name, "", "wait: read "+o.ri.Resource+" "+o.name, nil)
		m.add("watch", o.ri, o.ns, o.name, "", "wait: watch "+o.ri.Resource+" "+o.name, nil)
	}
	return err
}

func (m *mapper) top() error {
	if len(m.p.args) == 0 {
		return errors.New("kubectl top needs pod or node")
	}
	var ri resourceInfo
	switch m.p.args[0] {
	case "pod", "pods", "po":
		ri, _ = m.table.lookup("pods.metrics.k8s.io")
	case "node", "nodes", "no":
		ri, _ = m.table.lookup("nodes.metrics.k8s.io")
	default:
		return fmt.Errorf("unknown top subcommand %q (use pod or node)", m.p.args[0])
	}
	if len(m.p.args) > 1 {
		m.add("get", ri, m.namespace, m.p.args[1], "", "top "+m.p.args[0]+" "+m.p.args[1], nil)
		return nil
	}
	m.add("list", ri, m.ns(), "", "", "top "+m.p.args[0], nil)
	return nil
}

func (m *mapper) diff() error {
	objs, err := m.manifests()
	if err != nil {
		return err
	}
	saved := m.dryRun
	for _, o := range objs {
		m.add("get", o.ri, o.ns, o.name, "", "diff: read "+o.ri.Resource+" "+o.name, nil)
		m.dryRun = true
		m.add("patch", o.ri, o.ns, o.name, "", "diff: server-side dry-run of "+o.ri.Resource+" "+o.name, o.obj)
		m.dryRun = saved
	}
	return nil
}

func (m *mapper) certificate() error {
	if len(m.p.args) < 2 || (m.p.args[0] != "approve" && m.p.args[0] != "deny") {
		return errors.New("kubectl certificate needs approve|deny CSR")
	}
	for _, n := range m.p.args[1:] {
		m.add("get", m.res("certificatesigningrequests"), "", n, "", "read csr "+n, nil)
		m.add("update", m.res("certificatesigningrequests"), "", n, "approval", "certificate "+m.p.args[0]+" "+n, nil)
	}
	return nil
}

func (m *mapper) clusterInfo() error {
	if len(m.p.args) > 0 && m.p.args[0] == "dump" {
		m.add("list", m.res("nodes"), "", "", "", "cluster-info dump", nil)
		for _, r := range []string{"events", "replicationcontrollers", "services", "daemonsets", "deployments", "replicasets", "pods"} {
			m.add("list", m.res(r), m.ns(), "", "", "cluster-info dump", nil)
		}
		m.add("get", m.res("pods"), m.ns(), "", "log", "cluster-info dump: logs of every pod", nil)
		return nil
	}
	m.add("list", m.res("services"), "kube-system", "", "", "cluster-info", nil)
	return nil
}
