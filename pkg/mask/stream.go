package mask

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

var lastAppliedKey = []byte(LastAppliedAnnotation)

type field struct {
	key string
	raw json.RawMessage
}

// itemKindOf is the kind of the items of a list kind ("" when items carry
// their own kinds).
func itemKindOf(listKind string) string {
	if listKind == "List" || listKind == "PartialObjectMetadataList" || listKind == "Table" {
		return ""
	}
	return strings.TrimSuffix(listKind, "List")
}

// Stream masks one JSON document read from src and writes it to dst. The items
// of a list and the rows of a Table are decoded, masked and written one at a
// time, so memory is bounded by the largest item. kindHint is the kind the
// request's resource serves (used for Table rows, which do not say); it may be
// empty. A document that is not a JSON object is an error: the caller must
// fail closed.
func (m *Masker) Stream(dst io.Writer, src io.Reader, kindHint string) (Result, error) {
	var res Result
	dec := json.NewDecoder(src)
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return res, fmt.Errorf("reading JSON: %w", err)
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return res, fmt.Errorf("reading JSON: expected an object, got %v", t)
	}
	w := bufio.NewWriterSize(dst, 32<<10)
	var (
		pending  []field
		kind     string
		streamed bool
	)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return res, fmt.Errorf("reading JSON: %w", err)
		}
		key, ok := t.(string)
		if !ok {
			return res, fmt.Errorf("reading JSON: expected a key, got %v", t)
		}
		if !streamed && (key == "items" && strings.HasSuffix(kind, "List") || key == "rows" && kind == "Table") {
			streamed = true
			if err := m.streamArray(w, dec, pending, kind, key, kindHint, &res); err != nil {
				return res, err
			}
			continue
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return res, fmt.Errorf("reading JSON: %w", err)
		}
		if key == "kind" {
			_ = json.Unmarshal(raw, &kind)
		}
		if streamed {
			// Fields after the array belong to the list itself (metadata).
			w.WriteByte(',')
			writeKey(w, key)
			w.Write(raw)
			continue
		}
		pending = append(pending, field{key, raw})
	}
	if _, err := dec.Token(); err != nil {
		return res, fmt.Errorf("reading JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return res, errors.New("reading JSON: data after the object")
	}
	if streamed {
		w.WriteByte('}')
		return res, w.Flush()
	}
	// A single object (or a list whose kind came after its items): it is in
	// memory already, mask it whole.
	obj := make(map[string]any, len(pending))
	for _, f := range pending {
		var v any
		if err := unmarshal(f.raw, &v); err != nil {
			return res, err
		}
		obj[f.key] = v
	}
	paths := m.Object(obj, kindHint, "")
	res.add(m.maxPaths(), paths)
	if len(paths) == 0 {
		// Unchanged: write the fields back as they came.
		w.WriteByte('{')
		for i, f := range pending {
			if i > 0 {
				w.WriteByte(',')
			}
			writeKey(w, f.key)
			w.Write(f.raw)
		}
		w.WriteByte('}')
		return res, w.Flush()
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return res, fmt.Errorf("encoding masked JSON: %w", err)
	}
	w.Write(b)
	return res, w.Flush()
}

func unmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("reading JSON: %w", err)
	}
	return nil
}

func writeKey(w *bufio.Writer, key string) {
	b, _ := json.Marshal(key)
	w.Write(b)
	w.WriteByte(':')
}

// streamArray writes the list's leading fields, then its items (or a Table's
// rows) one by one.
func (m *Masker) streamArray(w *bufio.Writer, dec *json.Decoder, pending []field, kind, key, kindHint string, res *Result) error {
	w.WriteByte('{')
	var columns []string
	for _, f := range pending {
		writeKey(w, f.key)
		w.Write(f.raw)
		w.WriteByte(',')
		if f.key == "columnDefinitions" && kind == "Table" {
			var defs any
			if err := unmarshal(f.raw, &defs); err != nil {
				return err
			}
			columns = tableColumns(defs)
		}
	}
	writeKey(w, key)
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("reading JSON: %w", err)
	}
	if t == nil {
		w.WriteString("null")
		return nil
	}
	if d, ok := t.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("reading JSON: %s is not an array", key)
	}
	w.WriteByte('[')
	itemKind := itemKindOf(kind)
	maxPaths := m.maxPaths()
	for i := 0; dec.More(); i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("reading JSON: %w", err)
		}
		if i > 0 {
			w.WriteByte(',')
		}
		// Fast path: an item of a kind nothing masks, without the annotation
		// that can carry another object, passes as it came.
		if kind != "Table" && itemKind != "" && !m.Masks(itemKind) && !bytes.Contains(raw, lastAppliedKey) {
			w.Write(raw)
			continue
		}
		var item map[string]any
		if err := unmarshal(raw, &item); err != nil {
			return err
		}
		if item == nil {
			w.Write(raw)
			continue
		}
		var paths []string
		prefix := index(key, i)
		if kind == "Table" {
			m.row(item, kindHint, prefix, &paths, columns)
		} else {
			m.object(item, itemKind, prefix, &paths)
		}
		res.add(maxPaths, paths)
		if len(paths) == 0 {
			w.Write(raw)
			continue
		}
		b, err := json.Marshal(item)
		if err != nil {
			return fmt.Errorf("encoding masked JSON: %w", err)
		}
		w.Write(b)
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("reading JSON: %w", err)
	}
	w.WriteByte(']')
	return nil
}

// watchEvent is one frame of a JSON watch stream.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// Watch masks a JSON watch stream ({"type":..,"object":..} frames) from src to
// dst, one event at a time, calling flush after each so that the client sees
// events as they happen. It returns when src ends (nil on a clean end).
func (m *Masker) Watch(dst io.Writer, src io.Reader, kindHint string, flush func()) (Result, error) {
	var res Result
	dec := json.NewDecoder(src)
	var columns []string
	var buf bytes.Buffer
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if err == io.EOF {
				return res, nil
			}
			return res, fmt.Errorf("reading watch event: %w", err)
		}
		obj := []byte(ev.Object)
		if len(ev.Object) > 0 && !bytes.Equal(ev.Object, []byte("null")) {
			var o map[string]any
			if err := unmarshal(ev.Object, &o); err != nil {
				return res, err
			}
			if o == nil {
				return res, errors.New("reading watch event: object is not a JSON object")
			}
			var paths []string
			if k, _ := o["kind"].(string); k == "Table" {
				if c := tableColumns(o["columnDefinitions"]); len(c) > 0 {
					columns = c
				}
				m.table(o, kindHint, "object", &paths, columns)
			} else {
				m.object(o, kindHint, "object", &paths)
			}
			res.add(m.maxPaths(), paths)
			if len(paths) > 0 {
				b, err := json.Marshal(o)
				if err != nil {
					return res, fmt.Errorf("encoding masked watch event: %w", err)
				}
				obj = b
			}
		} else {
			obj = []byte("null")
		}
		buf.Reset()
		buf.WriteString(`{"type":`)
		tb, _ := json.Marshal(ev.Type)
		buf.Write(tb)
		buf.WriteString(`,"object":`)
		buf.Write(obj)
		buf.WriteString("}\n")
		if _, err := dst.Write(buf.Bytes()); err != nil {
			return res, err
		}
		if flush != nil {
			flush()
		}
	}
}
