package mask

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// itemKindOf is the kind of the items of a list kind ("" when items carry
// their own kinds).
func itemKindOf(listKind string) string {
	if listKind == "List" || listKind == "PartialObjectMetadataList" || listKind == "Table" {
		return ""
	}
	return strings.TrimSuffix(listKind, "List")
}

func jsonErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errIncomplete) {
		return errors.New("reading JSON: unexpected end of input")
	}
	var se *syntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("reading JSON: %w", err)
	}
	return fmt.Errorf("reading the response: %w", err)
}

// Stream masks one JSON document read from src and writes it to dst. The items
// of a list and the rows of a Table are read, masked and written one at a
// time, so memory is bounded by the largest item. Only the values that are
// masked change; every other byte passes as it came. kindHint is the kind the
// request's resource serves (used for Table rows, which do not say); it may
// be empty. A document that is not one valid JSON object is an error: the
// caller must fail closed.
func (m *Masker) Stream(dst io.Writer, src io.Reader, kindHint string) (Result, error) {
	var res Result
	r := m.getReader(src)
	defer m.putReader(r)
	w := m.getWalker()
	defer m.putWalker(w)
	bw := m.getWriter(dst)
	defer m.putWriter(bw)

	c, err := r.next()
	if err != nil {
		return res, jsonErr(err)
	}
	if c != '{' {
		return res, fmt.Errorf("reading JSON: expected an object, got %q", c)
	}
	start := r.pos
	r.pos++
	var (
		top      []member // the members read before the streamed array
		kind     string
		seenKind bool
		streamed string // "items" or "rows" once streaming
	)
	for first := true; ; first = false {
		c, err := r.next()
		if err != nil {
			return res, jsonErr(err)
		}
		if first && c == '}' {
			r.pos++
			break
		}
		if c != '"' {
			return res, fmt.Errorf("reading JSON: expected a key at %q", c)
		}
		var mb member
		mb.k0 = r.pos
		if mb.k1, mb.kesc, err = r.str(); err != nil {
			return res, jsonErr(err)
		}
		r.pos = mb.k1
		if c, err = r.next(); err != nil {
			return res, jsonErr(err)
		}
		if c != ':' {
			return res, fmt.Errorf("reading JSON: expected ':' at %q", c)
		}
		r.pos++
		if _, err = r.next(); err != nil {
			return res, jsonErr(err)
		}
		w.b = r.buf
		key := w.key(mb)
		if streamed != "" && (key == "kind" || key == "items" || key == "rows") {
			// The list was written with the kind it had; another kind or
			// array after it could make a client read it differently.
			return res, fmt.Errorf("reading JSON: %q after the %s of a %s", key, streamed, kind)
		}
		if streamed == "" && (key == "items" && strings.HasSuffix(kind, "List") || key == "rows" && kind == "Table") {
			streamed = key
			if err := m.streamHead(bw, w, r, start, top, kind, &res); err != nil {
				return res, err
			}
			if err := m.streamArray(bw, w, r, top, kind, key, kindHint, &res); err != nil {
				return res, err
			}
		} else {
			mb.v0 = r.pos
			if mb.v1, err = r.value(); err != nil {
				return res, jsonErr(err)
			}
			r.pos = mb.v1
			w.b = r.buf
			if key == "kind" {
				if seenKind {
					return res, errors.New("reading JSON: the object has two kinds")
				}
				seenKind = true
				kind = w.str(mb)
			}
			if streamed == "" {
				top = append(top, mb)
			} else if err := m.streamTail(bw, w, r.buf, mb, &res); err != nil {
				return res, err
			}
		}
		if c, err = r.next(); err != nil {
			return res, jsonErr(err)
		}
		r.pos++
		if c == '}' {
			break
		}
		if c != ',' {
			return res, fmt.Errorf("reading JSON: expected ',' or '}' at %q", c)
		}
	}
	end := r.pos
	if _, ok, err := r.ws(); err != nil {
		return res, jsonErr(err)
	} else if ok {
		return res, errors.New("reading JSON: data after the object")
	}
	if streamed != "" {
		if err := bw.WriteByte('}'); err != nil {
			return res, err
		}
		return res, bw.Flush()
	}
	// A single object (or a list whose kind came after its items): it is in
	// memory already, mask it whole.
	w.reset(r.buf, m.maxPaths())
	if err := w.object(start, kindHint, ""); err != nil {
		return res, jsonErr(err)
	}
	res.addWalk(m.maxPaths(), w)
	if err := w.writeTo(bw, start, end); err != nil {
		return res, err
	}
	return res, bw.Flush()
}

// addWalk adds what a walk masked as one object.
func (r *Result) addWalk(max int, w *walker) {
	if w.n == 0 {
		return
	}
	r.Objects++
	for _, p := range w.paths {
		if len(r.Paths) < max {
			r.Paths = append(r.Paths, p)
		} else {
			r.MorePaths++
		}
	}
	r.MorePaths += w.n - len(w.paths)
}

// streamHead writes the list's members before its items (the list's own
// last-applied annotation masked) and the items' key.
func (m *Masker) streamHead(bw *bufio.Writer, w *walker, r *reader, start int, top []member, kind string, res *Result) error {
	w.reset(r.buf, m.maxPaths()-len(res.Paths))
	if kind != "Table" {
		if err := w.lastApplied(top, ""); err != nil {
			return jsonErr(err)
		}
	}
	res.addWalk(m.maxPaths(), w)
	return w.writeTo(bw, start, r.pos)
}

// streamTail writes one member that follows the streamed array.
func (m *Masker) streamTail(bw *bufio.Writer, w *walker, buf []byte, mb member, res *Result) error {
	w.reset(buf, m.maxPaths()-len(res.Paths))
	if err := w.lastApplied([]member{mb}, ""); err != nil {
		return jsonErr(err)
	}
	res.addWalk(m.maxPaths(), w)
	if err := bw.WriteByte(','); err != nil {
		return err
	}
	return w.writeTo(bw, mb.k0, mb.v1)
}

// streamArray writes a list's items (or a Table's rows) one by one, and
// leaves r just after the array. The bytes before r.pos are written already.
func (m *Masker) streamArray(bw *bufio.Writer, w *walker, r *reader, top []member, kind, key, kindHint string, res *Result) error {
	var columns []string
	if kind == "Table" {
		w.reset(r.buf, 0)
		var err error
		if columns, err = w.columns(top); err != nil {
			return jsonErr(err)
		}
	}
	// The head is out: nothing before the array is needed any more.
	r.compact()
	c, err := r.next()
	if err != nil {
		return jsonErr(err)
	}
	if c == 'n' {
		end, err := r.value()
		if err != nil {
			return jsonErr(err)
		}
		r.pos = end
		_, err = bw.WriteString("null")
		return err
	}
	if c != '[' {
		return fmt.Errorf("reading JSON: %s is not an array", key)
	}
	r.pos++
	if err := bw.WriteByte('['); err != nil {
		return err
	}
	itemKind := itemKindOf(kind)
	maxPaths := m.maxPaths()
	prefix := ""
	for i := 0; ; i++ {
		r.compact()
		c, err := r.next()
		if err != nil {
			return jsonErr(err)
		}
		if i == 0 && c == ']' {
			r.pos++
			break
		}
		s := r.pos
		e, err := r.value()
		if err != nil {
			return jsonErr(err)
		}
		switch r.buf[s] {
		case 'n':
			if _, err := bw.WriteString("null"); err != nil {
				return err
			}
		case '{':
			w.reset(r.buf, maxPaths-len(res.Paths))
			if !w.full() {
				prefix = index(key, i)
			}
			if kind == "Table" {
				err = w.row(s, kindHint, prefix, columns)
			} else {
				err = w.object(s, itemKind, prefix)
			}
			if err != nil {
				return jsonErr(err)
			}
			res.addWalk(maxPaths, w)
			if err := w.writeTo(bw, s, e); err != nil {
				return err
			}
		default:
			return fmt.Errorf("reading JSON: %s[%d] is not an object", key, i)
		}
		r.pos = e
		if c, err = r.next(); err != nil {
			return jsonErr(err)
		}
		r.pos++
		if c == ']' {
			break
		}
		if c != ',' {
			return fmt.Errorf("reading JSON: expected ',' or ']' at %q", c)
		}
		if err := bw.WriteByte(','); err != nil {
			return err
		}
	}
	return bw.WriteByte(']')
}

// Watch masks a JSON watch stream ({"type":..,"object":..} frames) from src to
// dst, one event at a time, calling flush after each so that the client sees
// events as they happen. Each event is written back as exactly
// {"type":T,"object":O} and a newline, whatever else the frame held. It
// returns when src ends (nil on a clean end).
func (m *Masker) Watch(dst io.Writer, src io.Reader, kindHint string, flush func()) (Result, error) {
	var res Result
	r := m.getReader(src)
	defer m.putReader(r)
	w := m.getWalker()
	defer m.putWalker(w)
	var (
		columns []string
		out     []byte
	)
	for {
		r.compact()
		c, ok, err := r.ws()
		if err != nil {
			return res, fmt.Errorf("reading watch event: %w", jsonErr(err))
		}
		if !ok {
			return res, nil
		}
		if c != '{' {
			return res, fmt.Errorf("reading watch event: expected an object, got %q", c)
		}
		s := r.pos
		e, err := r.value()
		if err != nil {
			return res, fmt.Errorf("reading watch event: %w", jsonErr(err))
		}
		r.pos = e
		w.reset(r.buf, m.maxPaths()-len(res.Paths))
		ms, _, err := w.members(s)
		if err != nil {
			return res, fmt.Errorf("reading watch event: %w", jsonErr(err))
		}
		// Go clients match these keys case-insensitively, the last one
		// winning; the event is written back with one of each.
		var typ, obj *member
		for k := range ms {
			switch {
			case strings.EqualFold(w.key(ms[k]), "type"):
				typ = &ms[k]
			case strings.EqualFold(w.key(ms[k]), "object"):
				obj = &ms[k]
			}
		}
		out = append(out[:0], `{"type":`...)
		switch {
		case typ == nil || w.b[typ.v0] == 'n':
			out = append(out, `""`...)
		case w.b[typ.v0] == '"':
			out = append(out, w.b[typ.v0:typ.v1]...)
		default:
			return res, errors.New("reading watch event: type is not a string")
		}
		out = append(out, `,"object":`...)
		switch {
		case obj == nil || w.b[obj.v0] == 'n':
			out = append(out, "null"...)
		case w.b[obj.v0] == '{':
			o := *obj
			w.release(0)
			if err := m.watchObject(w, o.v0, kindHint, &columns); err != nil {
				return res, fmt.Errorf("reading watch event: %w", jsonErr(err))
			}
			res.addWalk(m.maxPaths(), w)
			out = w.appendTo(out, o.v0, o.v1, false)
		default:
			return res, errors.New("reading watch event: object is not a JSON object")
		}
		out = append(out, "}\n"...)
		if _, err := dst.Write(out); err != nil {
			return res, err
		}
		if flush != nil {
			flush()
		}
		if cap(out) > 1<<20 {
			out = nil
		}
	}
}

// watchObject masks one watch event's object. Table events after the first
// may leave out the column definitions; the last ones seen are used then.
func (m *Masker) watchObject(w *walker, i int, kindHint string, columns *[]string) error {
	ms, mark, err := w.members(i)
	if err != nil {
		return err
	}
	defer w.release(mark)
	kind := ""
	for _, mb := range ms {
		if w.keyIs(mb, "kind") {
			kind = w.str(mb)
		}
	}
	if kind != "Table" {
		w.release(mark)
		return w.object(i, kindHint, "object")
	}
	c, err := w.columns(ms)
	if err != nil {
		return err
	}
	if len(c) > 0 {
		*columns = c
	}
	return w.table(ms, kindHint, "object", *columns)
}

// Bytes masks one JSON document (any shape this package knows) held in
// memory. It returns the masked bytes (b itself when nothing was masked).
func (m *Masker) Bytes(b []byte, kindHint string) ([]byte, Result, error) {
	var buf bytes.Buffer
	res, err := m.Stream(&buf, bytes.NewReader(b), kindHint)
	if err != nil {
		return nil, res, err
	}
	if res.Objects == 0 {
		return b, res, nil
	}
	return buf.Bytes(), res, nil
}
