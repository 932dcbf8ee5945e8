// Package mask hides secret values in Kubernetes JSON as it passes through the
// proxy: single objects, lists (typed and v1 List), meta.k8s.io Tables,
// PartialObjectMetadata(List) and watch event streams.
//
// Masking goes by object kind, never by the resource string of the request,
// because the same Secret can arrive as an object, an item of a list, a row of
// a Table, a watch event, or inside another object's
// kubectl.kubernetes.io/last-applied-configuration annotation.
//
// What is masked:
//   - Secret: every value of data (base64 of the placeholder, so typed clients
//     still decode it) and stringData (the plain placeholder). Always, whatever
//     the rules say: a Secret's values never pass.
//   - ConfigMap named by a rule: values of data and binaryData whose key matches
//     one of the rule's key expressions (all keys when the rule lists none).
//   - Any other kind named by a rule: with keys, the value of every field
//     (outside metadata) whose name matches; without keys, every string leaf
//     outside apiVersion, kind and metadata.
//   - The last-applied-configuration annotation of any object: the JSON inside
//     is masked by the same rules; when it does not parse, the whole annotation
//     is replaced (fail closed).
//
// Streams are processed item by item (lists) and event by event (watches), so
// memory is bounded by the largest object, not by the size of the response.
// Stream, Watch and Bytes work on the JSON bytes (walk.go): a validating
// scanner finds the spans of the values to hide and everything else is copied
// through unchanged, with no decoding into maps. Object is the map-based form
// of the same rules, for callers that hold a decoded object already; the tests
// check the two against each other.
package mask

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Placeholder replaces masked values. Secret data and ConfigMap binaryData get
// its base64 encoding (PlaceholderB64) so that they stay valid base64.
const Placeholder = "***masked-by-kubectl-agent***"

// PlaceholderB64 is base64(Placeholder).
var PlaceholderB64 = base64.StdEncoding.EncodeToString([]byte(Placeholder))

// LastAppliedAnnotation is kubectl's client-side apply annotation, which holds
// a copy of the applied object (and so of a Secret's data).
const LastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// Rule names kinds whose values are masked, and optionally which keys. It
// mirrors the policy file's mask entries.
type Rule struct {
	Kinds []string
	Keys  []*regexp.Regexp // nil: all keys
}

// Masker masks JSON by the rules it was built with. It is safe for concurrent
// use.
type Masker struct {
	rules []Rule
	// MaxPaths caps how many masked paths a Result keeps (0: 1000), so that a
	// list of many Secrets does not make the report as large as the list.
	MaxPaths int

	// kinds caches keysFor for the kinds rules name, and wildcard for every
	// other kind, so that looking up an item's kind costs no allocation.
	kinds    map[string]kindKeys
	wildcard kindKeys

	// Scratch space reused across calls (a list is masked item by item).
	walkers, readers, writers sync.Pool
}

type kindKeys struct {
	masked, all bool
	keys        []*regexp.Regexp
}

// New returns a Masker for rules. Secrets are masked even with no rules.
func New(rules []Rule) *Masker {
	m := &Masker{rules: rules, kinds: map[string]kindKeys{}}
	m.wildcard = m.computeKeys("*")
	for _, r := range rules {
		for _, k := range r.Kinds {
			if k != "*" {
				m.kinds[k] = m.computeKeys(k)
			}
		}
	}
	return m
}

// Result reports what was masked.
type Result struct {
	// Paths are the JSON paths of masked values (items[3].data.password), at
	// most MaxPaths of them.
	Paths []string
	// Objects counts objects in which something was masked.
	Objects int
	// MorePaths counts masked paths left out of Paths.
	MorePaths int
}

func (m *Masker) maxPaths() int {
	if m.MaxPaths > 0 {
		return m.MaxPaths
	}
	return 1000
}

// keysFor returns whether kind is masked and by which key expressions (nil
// with all=true: every key).
func (m *Masker) keysFor(kind string) (masked bool, all bool, keys []*regexp.Regexp) {
	if kind == "" {
		return false, false, nil
	}
	if kind == "Secret" {
		return true, true, nil
	}
	if m.kinds != nil {
		k, ok := m.kinds[kind]
		if !ok {
			k = m.wildcard
		}
		return k.masked, k.all, k.keys
	}
	k := m.computeKeys(kind)
	return k.masked, k.all, k.keys
}

// computeKeys collects what the rules say about kind ("*": what the wildcard
// rules say about any kind no rule names).
func (m *Masker) computeKeys(kind string) (k kindKeys) {
	if kind == "Secret" {
		return kindKeys{masked: true, all: true}
	}
	masked, all, keys := false, false, []*regexp.Regexp(nil)
	for _, r := range m.rules {
		if !slices.ContainsFunc(r.Kinds, func(k string) bool { return k == kind || k == "*" }) {
			continue
		}
		masked = true
		if r.Keys == nil {
			all = true
		}
		keys = append(keys, r.Keys...)
	}
	return kindKeys{masked: masked, all: all, keys: keys}
}

// Masks reports whether objects of kind have anything masked (besides the
// last-applied annotation, which is checked on every object).
func (m *Masker) Masks(kind string) bool {
	ok, _, _ := m.keysFor(kind)
	return ok
}

func matchAny(all bool, keys []*regexp.Regexp, k string) bool {
	if all {
		return true
	}
	for _, re := range keys {
		if re.MatchString(k) {
			return true
		}
	}
	return false
}

// Object masks obj in place and returns the masked paths, each prefixed with
// prefix. kindHint is used when obj carries no kind (items of a typed list).
func (m *Masker) Object(obj map[string]any, kindHint, prefix string) []string {
	var paths []string
	m.object(obj, kindHint, prefix, &paths)
	return paths
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func index(prefix string, i int) string { return prefix + "[" + strconv.Itoa(i) + "]" }

func (m *Masker) object(obj map[string]any, kindHint, prefix string, paths *[]string) {
	kind, _ := obj["kind"].(string)
	if kind == "" {
		kind = kindHint
	}
	switch {
	case kind == "Table":
		m.table(obj, kindHint, prefix, paths, nil)
		return
	}
	// Items are visited whatever the kind says, so that a list that lost its
	// kind cannot carry a Secret past the masker.
	if items, ok := obj["items"].([]any); ok {
		itemKind := ""
		if strings.HasSuffix(kind, "List") {
			itemKind = itemKindOf(kind)
		}
		for i, it := range items {
			if o, ok := it.(map[string]any); ok {
				m.object(o, itemKind, index(join(prefix, "items"), i), paths)
			}
		}
		if strings.HasSuffix(kind, "List") {
			m.lastApplied(obj, prefix, paths)
			return
		}
	}
	m.lastApplied(obj, prefix, paths)
	masked, all, keys := m.keysFor(kind)
	if !masked {
		return
	}
	switch kind {
	case "Secret":
		maskMap(obj, "data", PlaceholderB64, true, nil, prefix, paths)
		maskMap(obj, "stringData", Placeholder, true, nil, prefix, paths)
	case "ConfigMap":
		maskMap(obj, "data", Placeholder, all, keys, prefix, paths)
		maskMap(obj, "binaryData", PlaceholderB64, all, keys, prefix, paths)
	default:
		for k, v := range obj {
			if k == "apiVersion" || k == "kind" || k == "metadata" {
				continue
			}
			if all || matchAny(false, keys, k) {
				obj[k] = maskLeaves(v, join(prefix, k), paths)
				continue
			}
			obj[k] = maskKeys(v, keys, join(prefix, k), paths)
		}
	}
}

func maskMap(obj map[string]any, field, placeholder string, all bool, keys []*regexp.Regexp, prefix string, paths *[]string) {
	d, ok := obj[field].(map[string]any)
	if !ok {
		if v, present := obj[field]; present && v != nil {
			// Not a map where one is expected: replace it whole rather than guess.
			obj[field] = placeholder
			*paths = append(*paths, join(prefix, field))
		}
		return
	}
	for _, k := range sortedKeys(d) {
		if matchAny(all, keys, k) {
			d[k] = placeholder
			*paths = append(*paths, join(join(prefix, field), k))
		}
	}
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// maskLeaves replaces every string leaf of v.
func maskLeaves(v any, path string, paths *[]string) any {
	switch t := v.(type) {
	case string:
		*paths = append(*paths, path)
		return Placeholder
	case map[string]any:
		for _, k := range sortedKeys(t) {
			t[k] = maskLeaves(t[k], join(path, k), paths)
		}
	case []any:
		for i := range t {
			t[i] = maskLeaves(t[i], index(path, i), paths)
		}
	}
	return v
}

// maskKeys masks the values of fields whose name matches keys, anywhere in v.
func maskKeys(v any, keys []*regexp.Regexp, path string, paths *[]string) any {
	switch t := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(t) {
			if matchAny(false, keys, k) {
				t[k] = maskLeaves(t[k], join(path, k), paths)
			} else {
				t[k] = maskKeys(t[k], keys, join(path, k), paths)
			}
		}
	case []any:
		for i := range t {
			t[i] = maskKeys(t[i], keys, index(path, i), paths)
		}
	}
	return v
}

// lastApplied masks the JSON inside the last-applied annotation of obj.
func (m *Masker) lastApplied(obj map[string]any, prefix string, paths *[]string) {
	md, ok := obj["metadata"].(map[string]any)
	if !ok {
		return
	}
	ann, ok := md["annotations"].(map[string]any)
	if !ok {
		return
	}
	v, ok := ann[LastAppliedAnnotation]
	if !ok {
		return
	}
	path := join(prefix, "metadata.annotations."+LastAppliedAnnotation)
	s, ok := v.(string)
	if !ok {
		ann[LastAppliedAnnotation] = Placeholder
		*paths = append(*paths, path)
		return
	}
	var inner map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&inner); err != nil || inner == nil || d.More() {
		ann[LastAppliedAnnotation] = Placeholder
		*paths = append(*paths, path)
		return
	}
	var innerPaths []string
	m.object(inner, "", "", &innerPaths)
	if len(innerPaths) == 0 {
		return
	}
	b, err := json.Marshal(inner)
	if err != nil {
		ann[LastAppliedAnnotation] = Placeholder
		*paths = append(*paths, path)
		return
	}
	ann[LastAppliedAnnotation] = string(b) + "\n"
	for _, p := range innerPaths {
		*paths = append(*paths, path+"#"+p)
	}
}

// Table columns that never hold a value worth masking.
var plainColumns = map[string]bool{"Name": true, "Namespace": true, "Age": true, "Created At": true}

// table masks a meta.k8s.io Table: each row's embedded object by its own kind,
// and, for kinds masked by a rule other than Secret and ConfigMap (whose
// server-side columns show counts only), the cells of the masked columns.
// columns may be given when the column definitions were read earlier.
func (m *Masker) table(obj map[string]any, rowKind, prefix string, paths *[]string, columns []string) {
	if columns == nil {
		columns = tableColumns(obj["columnDefinitions"])
	}
	rows, _ := obj["rows"].([]any)
	for i, r := range rows {
		if row, ok := r.(map[string]any); ok {
			m.row(row, rowKind, index(join(prefix, "rows"), i), paths, columns)
		}
	}
}

func tableColumns(v any) []string {
	defs, _ := v.([]any)
	cols := make([]string, len(defs))
	for i, d := range defs {
		if dm, ok := d.(map[string]any); ok {
			cols[i], _ = dm["name"].(string)
		}
	}
	return cols
}

func (m *Masker) row(row map[string]any, rowKind, prefix string, paths *[]string, columns []string) {
	if o, ok := row["object"].(map[string]any); ok {
		m.object(o, "", join(prefix, "object"), paths)
	}
	if rowKind == "Secret" || rowKind == "ConfigMap" {
		return
	}
	masked, all, keys := m.keysFor(rowKind)
	if !masked {
		return
	}
	cells, _ := row["cells"].([]any)
	for i, c := range cells {
		name := ""
		if i < len(columns) {
			name = columns[i]
		}
		if plainColumns[name] {
			continue
		}
		if !all && !matchAny(false, keys, name) {
			continue
		}
		if _, isStr := c.(string); isStr || c == nil {
			cells[i] = Placeholder
		} else {
			cells[i] = maskLeaves(c, "", new([]string))
			if _, stillNum := cells[i].(json.Number); stillNum {
				cells[i] = Placeholder
			}
		}
		*paths = append(*paths, index(join(prefix, "cells"), i))
	}
}

// KindForResource returns the kind named by a rule whose plural is resource
// (widgets → Widget, policies → Policy), or "". Tables do not say which kind
// their rows are; the proxy uses this to know when to mask cells.
func (m *Masker) KindForResource(resource string) string {
	if resource == "secrets" {
		return "Secret"
	}
	for _, r := range m.rules {
		for _, k := range r.Kinds {
			l := strings.ToLower(k)
			plurals := []string{l + "s", l + "es"}
			if strings.HasSuffix(l, "y") {
				plurals = append(plurals, strings.TrimSuffix(l, "y")+"ies")
			}
			if slices.Contains(plurals, resource) {
				return k
			}
		}
	}
	return ""
}
