package mask

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
)

// member is an object member (key and value spans) or, with k0 == -1, an
// array element.
type member struct {
	k0, k1 int // the key, quotes included
	kesc   bool
	v0, v1 int // the value
}

// edit replaces b[s:e] by repl. Edits always cover whole JSON values, so two
// edits are either disjoint or one holds the other.
type edit struct {
	s, e   int
	seq    int
	lit    string // the replacement, or when empty
	r0, r1 int    // the replacement's span in the walker's arena
}

var (
	quotedPlaceholder    = `"` + Placeholder + `"`
	quotedPlaceholderB64 = `"` + PlaceholderB64 + `"`
)

// walker masks one JSON document (or one list item) held in memory: it finds
// the values to hide by walking the bytes, keeps them as edits, and writes
// the document back with only those values replaced. b must have been checked
// by the scanner before the walk.
type walker struct {
	m     *Masker
	b     []byte
	mbuf  []member // a stack: each call takes a slice and gives it back
	edits []edit
	arena []byte // replacements built while walking
	tmp   []byte // an annotation's decoded content, when this walker walks one

	paths []string // masked paths, at most room of them
	room  int
	n     int // masked paths, all of them
}

func (w *walker) reset(b []byte, room int) {
	w.b = b
	w.mbuf = w.mbuf[:0]
	w.edits = w.edits[:0]
	w.arena = w.arena[:0]
	w.paths = w.paths[:0]
	w.room = room
	w.n = 0
}

// full reports whether no more path strings are kept: from then on they are
// only counted, and not even built.
func (w *walker) full() bool { return len(w.paths) >= w.room }

func (w *walker) add(path string) {
	w.n++
	if !w.full() {
		w.paths = append(w.paths, path)
	}
}

func (w *walker) join(prefix, key string) string {
	if w.full() {
		return ""
	}
	return join(prefix, key)
}

func (w *walker) index(prefix string, i int) string {
	if w.full() {
		return ""
	}
	return index(prefix, i)
}

func (w *walker) replace(s, e int, repl string) {
	w.edits = append(w.edits, edit{s: s, e: e, seq: len(w.edits), lit: repl})
}

// replaceArena replaces b[s:e] by arena[r0:].
func (w *walker) replaceArena(s, e, r0 int) {
	w.edits = append(w.edits, edit{s: s, e: e, seq: len(w.edits), r0: r0, r1: len(w.arena)})
}

// members lists the members of the object at b[i]. The caller gives the
// slice back with release(mark) when done.
func (w *walker) members(i int) (ms []member, mark int, err error) {
	b := w.b
	mark = len(w.mbuf)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil, mark, nil
	}
	for i < len(b) {
		var mb member
		mb.k0 = i
		mb.k1 = fastString(b, i)
		mb.kesc = bytes.IndexByte(b[mb.k0:mb.k1], '\\') >= 0
		i = skipWS(b, mb.k1) + 1 // past ':'
		mb.v0 = skipWS(b, i)
		mb.v1 = fastSkip(b, mb.v0)
		w.mbuf = append(w.mbuf, mb)
		i = skipWS(b, mb.v1)
		if i >= len(b) || b[i] == '}' {
			break
		}
		i = skipWS(b, i+1) // past ','
	}
	return w.mbuf[mark:len(w.mbuf):len(w.mbuf)], mark, nil
}

// elems lists the elements of the array at b[i], like members.
func (w *walker) elems(i int) (es []member, mark int, err error) {
	b := w.b
	mark = len(w.mbuf)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil, mark, nil
	}
	for i < len(b) {
		mb := member{k0: -1, v0: i, v1: fastSkip(b, i)}
		w.mbuf = append(w.mbuf, mb)
		i = skipWS(b, mb.v1)
		if i >= len(b) || b[i] == ']' {
			break
		}
		i = skipWS(b, i+1)
	}
	return w.mbuf[mark:len(w.mbuf):len(w.mbuf)], mark, nil
}

func (w *walker) release(mark int) { w.mbuf = w.mbuf[:mark] }

// keyIs compares a member's (unescaped) key with k without allocating.
func (w *walker) keyIs(mb member, k string) bool {
	if !mb.kesc {
		return string(w.b[mb.k0+1:mb.k1-1]) == k
	}
	return unquote(w.b[mb.k0:mb.k1]) == k
}

func (w *walker) key(mb member) string {
	if !mb.kesc {
		return string(w.b[mb.k0+1 : mb.k1-1])
	}
	return unquote(w.b[mb.k0:mb.k1])
}

// matchKey is matchAny for a member's key.
func (w *walker) matchKey(all bool, keys []*regexp.Regexp, mb member) bool {
	if all {
		return true
	}
	if !mb.kesc {
		k := w.b[mb.k0+1 : mb.k1-1]
		for _, re := range keys {
			if re.Match(k) {
				return true
			}
		}
		return false
	}
	return matchAny(false, keys, unquote(w.b[mb.k0:mb.k1]))
}

// str returns the value of a string member ("" when it is not a string).
func (w *walker) str(mb member) string {
	if w.b[mb.v0] != '"' {
		return ""
	}
	raw := w.b[mb.v0:mb.v1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	return unquote(raw)
}

// object masks the object at b[i] as Masker.object does for maps; each
// duplicate of a key is looked at, not only the last one.
func (w *walker) object(i int, kindHint, prefix string) error {
	ms, mark, err := w.members(i)
	if err != nil {
		return err
	}
	defer w.release(mark)
	kind := ""
	for _, mb := range ms {
		if w.keyIs(mb, "kind") {
			kind = w.str(mb) // the last one wins, as for every Go client
		}
	}
	if kind == "" {
		kind = kindHint
	}
	if kind == "Table" {
		return w.table(ms, kindHint, prefix, nil)
	}
	// Items are visited whatever the kind says, so that a list that lost its
	// kind cannot carry a Secret past the masker.
	hasItems := false
	list := strings.HasSuffix(kind, "List")
	itemKind := ""
	if list {
		itemKind = itemKindOf(kind)
	}
	for _, mb := range ms {
		if w.b[mb.v0] != '[' || !w.keyIs(mb, "items") {
			continue
		}
		hasItems = true
		es, emark, err := w.elems(mb.v0)
		if err != nil {
			return err
		}
		for j, e := range es {
			if w.b[e.v0] == '{' {
				if err := w.object(e.v0, itemKind, w.index(w.join(prefix, "items"), j)); err != nil {
					return err
				}
			}
		}
		w.release(emark)
	}
	if err := w.lastApplied(ms, prefix); err != nil {
		return err
	}
	if hasItems && list {
		return nil
	}
	masked, all, keys := w.m.keysFor(kind)
	if !masked {
		return nil
	}
	switch kind {
	case "Secret":
		if err := w.maskFields(ms, "data", quotedPlaceholderB64, true, nil, prefix); err != nil {
			return err
		}
		return w.maskFields(ms, "stringData", quotedPlaceholder, true, nil, prefix)
	case "ConfigMap":
		if err := w.maskFields(ms, "data", quotedPlaceholder, all, keys, prefix); err != nil {
			return err
		}
		return w.maskFields(ms, "binaryData", quotedPlaceholderB64, all, keys, prefix)
	}
	for _, mb := range ms {
		if w.keyIs(mb, "apiVersion") || w.keyIs(mb, "kind") || w.keyIs(mb, "metadata") {
			continue
		}
		var err error
		if w.matchKey(all, keys, mb) {
			err = w.maskLeaves(mb.v0, w.join(prefix, w.key(mb)), true)
		} else {
			err = w.maskKeys(mb.v0, keys, w.join(prefix, w.key(mb)))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// maskFields masks the values of field (a map of strings) whose keys match;
// a field that is not a map is replaced whole rather than guessed at.
func (w *walker) maskFields(ms []member, field, placeholder string, all bool, keys []*regexp.Regexp, prefix string) error {
	for _, mb := range ms {
		if !w.keyIs(mb, field) {
			continue
		}
		switch w.b[mb.v0] {
		case 'n': // null
		case '{':
			ds, mark, err := w.members(mb.v0)
			if err != nil {
				return err
			}
			fp := w.join(prefix, field)
			for _, d := range ds {
				if w.matchKey(all, keys, d) {
					w.replace(d.v0, d.v1, placeholder)
					w.add(w.join(fp, w.key(d)))
				}
			}
			w.release(mark)
		default:
			w.replace(mb.v0, mb.v1, placeholder)
			w.add(w.join(prefix, field))
		}
	}
	return nil
}

// maskLeaves replaces every string in the value at b[i].
func (w *walker) maskLeaves(i int, path string, record bool) error {
	switch w.b[i] {
	case '"':
		w.replace(i, fastString(w.b, i), quotedPlaceholder)
		if record {
			w.add(path)
		}
	case '{':
		ms, mark, err := w.members(i)
		if err != nil {
			return err
		}
		for _, mb := range ms {
			p := ""
			if record {
				p = w.join(path, w.key(mb))
			}
			if err := w.maskLeaves(mb.v0, p, record); err != nil {
				return err
			}
		}
		w.release(mark)
	case '[':
		es, mark, err := w.elems(i)
		if err != nil {
			return err
		}
		for j, e := range es {
			p := ""
			if record {
				p = w.index(path, j)
			}
			if err := w.maskLeaves(e.v0, p, record); err != nil {
				return err
			}
		}
		w.release(mark)
	}
	return nil
}

// maskKeys masks the values of members whose key matches, at any depth.
func (w *walker) maskKeys(i int, keys []*regexp.Regexp, path string) error {
	switch w.b[i] {
	case '{':
		ms, mark, err := w.members(i)
		if err != nil {
			return err
		}
		for _, mb := range ms {
			p := w.join(path, w.key(mb))
			if w.matchKey(false, keys, mb) {
				err = w.maskLeaves(mb.v0, p, true)
			} else {
				err = w.maskKeys(mb.v0, keys, p)
			}
			if err != nil {
				return err
			}
		}
		w.release(mark)
	case '[':
		es, mark, err := w.elems(i)
		if err != nil {
			return err
		}
		for j, e := range es {
			if err := w.maskKeys(e.v0, keys, w.index(path, j)); err != nil {
				return err
			}
		}
		w.release(mark)
	}
	return nil
}

// lastApplied masks the JSON inside the last-applied annotation of the object
// whose members are ms. An annotation that is not a string holding one JSON
// object is replaced whole (fail closed).
func (w *walker) lastApplied(ms []member, prefix string) error {
	for _, md := range ms {
		if w.b[md.v0] != '{' || !w.keyIs(md, "metadata") {
			continue
		}
		mms, mmark, err := w.members(md.v0)
		if err != nil {
			return err
		}
		for _, an := range mms {
			if w.b[an.v0] != '{' || !w.keyIs(an, "annotations") {
				continue
			}
			ams, amark, err := w.members(an.v0)
			if err != nil {
				return err
			}
			for _, a := range ams {
				if w.keyIs(a, LastAppliedAnnotation) {
					w.maskAnnotation(a, prefix)
				}
			}
			w.release(amark)
		}
		w.release(mmark)
	}
	return nil
}

func (w *walker) maskAnnotation(a member, prefix string) {
	path := w.join(prefix, "metadata.annotations."+LastAppliedAnnotation)
	if w.b[a.v0] != '"' {
		w.replace(a.v0, a.v1, quotedPlaceholder)
		w.add(path)
		return
	}
	sub := w.m.getWalker()
	defer w.m.putWalker(sub)
	room := w.room - len(w.paths)
	if room < 0 {
		room = 0
	}
	sub.tmp = appendUnquoted(sub.tmp[:0], w.b[a.v0:a.v1])
	inner := sub.tmp
	sub.reset(inner, room)
	i := skipWS(inner, 0)
	ok := i < len(inner) && inner[i] == '{'
	if ok {
		end, err := skipValue(inner, i, 1)
		ok = err == nil && skipWS(inner, end) == len(inner) && sub.object(i, "", "") == nil
	}
	if !ok {
		w.replace(a.v0, a.v1, quotedPlaceholder)
		w.add(path)
		return
	}
	if sub.n == 0 {
		return
	}
	r0 := len(w.arena)
	w.arena = append(w.arena, '"')
	w.arena = sub.appendTo(w.arena, 0, len(inner), true)
	w.arena = append(w.arena, '"')
	w.replaceArena(a.v0, a.v1, r0)
	for _, p := range sub.paths {
		w.add(path + "#" + p)
	}
	w.n += sub.n - len(sub.paths)
}

// table masks a meta.k8s.io Table: each row's embedded object by its own
// kind, and for kinds masked by a rule other than Secret and ConfigMap (whose
// server-side columns show counts only), the cells of the masked columns.
// columns may be given when the column definitions were read earlier.
func (w *walker) table(ms []member, rowKind, prefix string, columns []string) error {
	if columns == nil {
		var err error
		if columns, err = w.columns(ms); err != nil {
			return err
		}
	}
	for _, mb := range ms {
		if w.b[mb.v0] != '[' || !w.keyIs(mb, "rows") {
			continue
		}
		es, mark, err := w.elems(mb.v0)
		if err != nil {
			return err
		}
		for j, e := range es {
			if w.b[e.v0] == '{' {
				if err := w.row(e.v0, rowKind, w.index(w.join(prefix, "rows"), j), columns); err != nil {
					return err
				}
			}
		}
		w.release(mark)
	}
	return nil
}

// columns reads the names of a Table's columns (the last columnDefinitions).
func (w *walker) columns(ms []member) ([]string, error) {
	var defs *member
	for k := range ms {
		if w.keyIs(ms[k], "columnDefinitions") {
			defs = &ms[k]
		}
	}
	if defs == nil || w.b[defs.v0] != '[' {
		return []string{}, nil
	}
	es, mark, err := w.elems(defs.v0)
	if err != nil {
		return nil, err
	}
	defer w.release(mark)
	cols := make([]string, len(es))
	for j, e := range es {
		if w.b[e.v0] != '{' {
			continue
		}
		cs, cmark, err := w.members(e.v0)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if w.keyIs(c, "name") {
				cols[j] = w.str(c)
			}
		}
		w.release(cmark)
	}
	return cols, nil
}

func (w *walker) row(i int, rowKind, prefix string, columns []string) error {
	ms, mark, err := w.members(i)
	if err != nil {
		return err
	}
	defer w.release(mark)
	for _, mb := range ms {
		if w.b[mb.v0] == '{' && w.keyIs(mb, "object") {
			if err := w.object(mb.v0, "", w.join(prefix, "object")); err != nil {
				return err
			}
		}
	}
	if rowKind == "Secret" || rowKind == "ConfigMap" {
		return nil
	}
	masked, all, keys := w.m.keysFor(rowKind)
	if !masked {
		return nil
	}
	for _, mb := range ms {
		if w.b[mb.v0] != '[' || !w.keyIs(mb, "cells") {
			continue
		}
		es, emark, err := w.elems(mb.v0)
		if err != nil {
			return err
		}
		for j, e := range es {
			name := ""
			if j < len(columns) {
				name = columns[j]
			}
			if plainColumns[name] || !matchAny(all, keys, name) {
				continue
			}
			switch c := w.b[e.v0]; {
			case c == '{' || c == '[':
				if err := w.maskLeaves(e.v0, "", false); err != nil {
					return err
				}
			case c == 't' || c == 'f':
			default: // strings, numbers, null
				w.replace(e.v0, e.v1, quotedPlaceholder)
			}
			w.add(w.index(w.join(prefix, "cells"), j))
		}
		w.release(emark)
	}
	return nil
}

// appendTo appends b[s:e] with the edits applied, escaped for the inside of
// a JSON string when escape is set.
func (w *walker) appendTo(dst []byte, s, e int, escape bool) []byte {
	w.sortEdits()
	pos := s
	for _, ed := range w.edits {
		if ed.s < pos {
			continue // inside (or the same as) an edit already made
		}
		if escape {
			dst = appendEscaped(dst, w.b[pos:ed.s])
			if ed.lit != "" {
				dst = appendEscaped(dst, ed.lit)
			} else {
				dst = appendEscaped(dst, w.arena[ed.r0:ed.r1])
			}
		} else {
			dst = append(dst, w.b[pos:ed.s]...)
			if ed.lit != "" {
				dst = append(dst, ed.lit...)
			} else {
				dst = append(dst, w.arena[ed.r0:ed.r1]...)
			}
		}
		pos = ed.e
	}
	if escape {
		return appendEscaped(dst, w.b[pos:e])
	}
	return append(dst, w.b[pos:e]...)
}

// stringWriter is what the walker writes to (bufio.Writer, bytes.Buffer).
type stringWriter interface {
	Write([]byte) (int, error)
	WriteString(string) (int, error)
}

// writeTo writes b[s:e] with the edits applied.
func (w *walker) writeTo(dst stringWriter, s, e int) error {
	w.sortEdits()
	pos := s
	for _, ed := range w.edits {
		if ed.s < pos {
			continue
		}
		if _, err := dst.Write(w.b[pos:ed.s]); err != nil {
			return err
		}
		var err error
		if ed.lit != "" {
			_, err = dst.WriteString(ed.lit)
		} else {
			_, err = dst.Write(w.arena[ed.r0:ed.r1])
		}
		if err != nil {
			return err
		}
		pos = ed.e
	}
	_, err := dst.Write(w.b[pos:e])
	return err
}

// sortEdits orders edits by position; of nested edits the outer comes first
// (it hides the inner ones), of edits of the same value the last made wins,
// as the map-based masker's last assignment would.
func (w *walker) sortEdits() {
	slices.SortFunc(w.edits, func(a, b edit) int {
		switch {
		case a.s != b.s:
			return a.s - b.s
		case a.e != b.e:
			return b.e - a.e
		default:
			return b.seq - a.seq
		}
	})
}
