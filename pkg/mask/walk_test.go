package mask

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// watchEvent is one frame of a JSON watch stream, as the tests read them.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// reference masks a whole document with the map-based masker (Object), the
// straightforward implementation the byte-level walker must agree with.
func reference(m *Masker, in []byte, hint string) (any, bool) {
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil || obj == nil {
		return nil, false
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, false
	}
	m.Object(obj, hint, "")
	return obj, true
}

func decodeNumbers(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

func isPlaceholder(v any) bool { return v == Placeholder || v == PlaceholderB64 }

// sameMasking compares the walker's output (got) with the reference's (want):
// the same document, except that the walker may hide more (got holds a
// placeholder where want does not) only where allowMore says so. The
// last-applied annotation's JSON is compared as JSON.
func sameMasking(t *testing.T, path string, got, want any, allowMore func(path string) bool) {
	t.Helper()
	if isPlaceholder(got) && isPlaceholder(want) {
		return
	}
	if isPlaceholder(got) && allowMore(path) {
		return
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			t.Fatalf("%s: got %#v, want %#v", path, got, want)
		}
		for k := range w {
			if _, ok := g[k]; !ok {
				t.Fatalf("%s: key %q missing", path, k)
			}
			if k == LastAppliedAnnotation {
				gs, gok := g[k].(string)
				ws, wok := w[k].(string)
				if gok && wok && gs != ws {
					gv, gerr := decodeNumbers([]byte(gs))
					wv, werr := decodeNumbers([]byte(ws))
					if gerr == nil && werr == nil {
						sameMasking(t, path+"."+k+"#", gv, wv, allowMore)
						continue
					}
				}
			}
			sameMasking(t, path+"."+k, g[k], w[k], allowMore)
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			t.Fatalf("%s: got %#v, want %#v", path, got, want)
		}
		for i := range w {
			sameMasking(t, fmt.Sprintf("%s[%d]", path, i), g[i], w[i], allowMore)
		}
	default:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: got %#v, want %#v", path, got, want)
		}
	}
}

// hasDuplicateKeys reports whether some object in the JSON repeats a key;
// the map-based reference loses all but the last of them, so it is no
// reference for such input.
func hasDuplicateKeys(b []byte) bool {
	d := json.NewDecoder(bytes.NewReader(b))
	var dup bool
	var walk func() bool
	walk = func() bool {
		t, err := d.Token()
		if err != nil {
			return false
		}
		switch t {
		case json.Delim('{'):
			seen := map[string]bool{}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return false
				}
				ks, _ := k.(string)
				if seen[ks] {
					dup = true
				}
				seen[ks] = true
				if !walk() {
					return false
				}
			}
			_, err = d.Token()
			return err == nil
		case json.Delim('['):
			for d.More() {
				if !walk() {
					return false
				}
			}
			_, err = d.Token()
			return err == nil
		}
		return true
	}
	walk()
	return dup
}

// checkAgainstReference masks in with Stream and with the reference and
// compares them.
func checkAgainstReference(t *testing.T, m *Masker, in []byte, hint string) {
	t.Helper()
	var out bytes.Buffer
	_, err := m.Stream(&out, bytes.NewReader(in), hint)
	want, ok := reference(m, in, hint)
	if err != nil {
		if !ok {
			return // both refuse it
		}
		if hasDuplicateKeys(in) {
			return
		}
		// The walker refuses some documents the reference masks (a list
		// item that is not an object): it must at least be one of those.
		if !strings.Contains(err.Error(), "is not an object") && !strings.Contains(err.Error(), "is not an array") {
			t.Fatalf("Stream failed where the reference did not: %v\ninput: %s", err, in)
		}
		return
	}
	if !json.Valid(out.Bytes()) {
		t.Fatalf("invalid JSON out for %q: %q", in, out.Bytes())
	}
	if !ok {
		t.Fatalf("Stream accepted what is not one JSON object: %q", in)
	}
	if hasDuplicateKeys(in) {
		return
	}
	got, err := decodeNumbers(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// The walker is stricter about the annotation: it wants exactly one
	// JSON object in it, where the reference lets trailing brackets pass.
	allowMore := func(p string) bool { return strings.HasSuffix(p, "."+LastAppliedAnnotation) }
	sameMasking(t, "", got, want, allowMore)
}

func TestAgainstReference(t *testing.T) {
	sec := strings.Replace(secretJSON("a"), `{"metadata"`, `{"kind":"Secret","apiVersion":"v1","metadata"`, 1)
	docs := []string{
		sec,
		`{"kind":"SecretList","metadata":{},"items":[` + secretJSON("a") + `,` + secretJSON("b") + `]}`,
		`{"items":[` + secretJSON("a") + `],"kind":"SecretList"}`,
		`{"kind":"List","items":[{"kind":"ConfigMap","data":{"password":"x","color":"y"},"binaryData":{"tokenA":"eA=="}},` + sec + `]}`,
		`{"kind":"Table","columnDefinitions":[{"name":"Name"},{"name":"Value"},{"name":"Count"}],"rows":[{"cells":["w1","v",3,true,null,{"a":"b","n":1}],"object":` + sec + `}]}`,
		`{"kind":"Widget","metadata":{"name":"w"},"spec":{"inner":{"v":"s"},"n":5,"l":["a",1,"b"]}}`,
		`{"kind":"Gadget","metadata":{"name":"g"},"spec":{"apiKey":{"x":"y","z":[1,"2"]},"size":"large","deep":[{"apiKey":"k"}]}}`,
		`{"kind":"Deployment","metadata":{"annotations":{"` + LastAppliedAnnotation + `":"{not json"}}}`,
		`{"kind":"Deployment","metadata":{"annotations":{"` + LastAppliedAnnotation + `":5}}}`,
		`{"kind":"Deployment","metadata":{"annotations":{"` + LastAppliedAnnotation + `":` + lastApplied(`{"kind":"Secret","data":{"k":"\u00e9\ud83d\ude00\"<>&"}}`) + `}}}`,
		`{"kind":"Secret","data":"notamap","stringData":["a"]}`,
		`{"kind":"Secret","data":null}`,
		`{"kind":"PartialObjectMetadataList","items":[{"kind":"PartialObjectMetadata","metadata":{"annotations":{"` + LastAppliedAnnotation + `":"null"}}}]}`,
		`{"kind":"Sec\u0072et","d\u0061ta":{"k\"ey":"v\\u00"}}`,
		`{"kind":"ConfigMapList","items":[{"metadata":{"name":"c"},"data":{"PASSWORD":"x","tokenish":"y","other":"z"}}]}`,
	}
	for _, d := range docs {
		for _, hint := range []string{"", "Secret", "Widget", "Gadget"} {
			checkAgainstReference(t, New(rules()), []byte(d), hint)
		}
	}
}

// FuzzAgainstReference compares the byte-level walker with the map-based
// reference on any input.
func FuzzAgainstReference(f *testing.F) {
	sec := strings.Replace(secretJSON("a"), `{"metadata"`, `{"kind":"Secret","metadata"`, 1)
	for _, s := range []string{
		sec,
		`{"kind":"SecretList","items":[` + secretJSON("b") + `]}`,
		`{"kind":"List","items":[` + sec + `,{"kind":"ConfigMap","data":{"token":"t","x":"y"}}]}`,
		`{"kind":"Table","columnDefinitions":[{"name":"Name"},{"name":"V"}],"rows":[{"cells":["a",1,{"b":"c"}],"object":` + sec + `}]}`,
		`{"kind":"Gadget","spec":{"apiKey":["a",{"b":"c"}],"x":{"apiKey":1}}}`,
		`{"kind":"Widget","metadata":{"annotations":{"` + LastAppliedAnnotation + `":"{\"kind\":\"Widget\",\"spec\":\"s\"}"}},"spec":"s"}`,
	} {
		f.Add([]byte(s), uint8(0))
	}
	hints := []string{"", "Secret", "Widget", "Gadget", "ConfigMap"}
	f.Fuzz(func(t *testing.T, in []byte, h uint8) {
		checkAgainstReference(t, New(rules()), in, hints[int(h)%len(hints)])
	})
}

// FuzzScanner checks the validating scanner against encoding/json.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{`{}`, `[1,2.5e+3,-0,"a\u00e9\n",true,false,null,{"a":[]}]`, `{"a":01}`, `"\ud800"`, `[1,]`, `{"a" 1}`, "\"\x01\"", `1.`, `-`, `1e`, `[`, ` {"a":"b"} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// A space after the value ends a trailing number, as the scanner
		// expects of the documents it reads.
		b := append(append([]byte(nil), in...), ' ')
		end, err := skipValue(b, 0, 0)
		ok := err == nil && skipWS(b, end) == len(b)
		if ok != json.Valid(in) {
			t.Fatalf("scanner says valid=%v (%v), encoding/json says %v, for %q", ok, err, json.Valid(in), in)
		}
		if !ok {
			return
		}
		// On valid input the fast skipper finds the same end.
		i := skipWS(b, 0)
		if fe := fastSkip(b, i); fe != end {
			t.Fatalf("fastSkip end %d, skipValue end %d, for %q", fe, end, in)
		}
		if b[i] == '"' {
			var want string
			if err := json.Unmarshal(in, &want); err != nil {
				t.Fatal(err)
			}
			if got := unquote(b[i:end]); got != want {
				t.Fatalf("unquote(%q) = %q, encoding/json says %q", b[i:end], got, want)
			}
			q := appendQuoted(nil, []byte(want))
			var back string
			if err := json.Unmarshal(q, &back); err != nil || back != want {
				t.Fatalf("appendQuoted(%q) = %q, which reads back as %q (%v)", want, q, back, err)
			}
		}
	})
}

// oneByteReader hands out one byte per Read, the worst case for the
// streaming reader's rescans.
type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func TestStreamSmallReads(t *testing.T) {
	var items []string
	for i := range 50 {
		items = append(items, secretJSON(fmt.Sprint(i)))
	}
	in := `{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[` + strings.Join(items, ",") + `]}`
	var a, b bytes.Buffer
	ra, err := New(nil).Stream(&a, strings.NewReader(in), "")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := New(nil).Stream(&b, &oneByteReader{[]byte(in)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || !reflect.DeepEqual(ra, rb) {
		t.Fatal("one-byte reads give a different result")
	}
	mustNotLeak(t, b.Bytes())
	var w bytes.Buffer
	ev := `{"type":"ADDED","object":` + strings.Replace(secretJSON("w"), `{"metadata"`, `{"kind":"Secret","metadata"`, 1) + "}\n"
	if _, err := New(nil).Watch(&w, &oneByteReader{[]byte(ev + ev)}, "", nil); err != nil {
		t.Fatal(err)
	}
	if strings.Count(w.String(), "\n") != 2 {
		t.Fatalf("watch: %s", w.String())
	}
	mustNotLeak(t, bytes.Split(w.Bytes(), []byte("\n"))[0])
}

// TestUnmaskedBytesUnchanged: what is not masked passes byte for byte, with
// its own spacing, key order and escapes.
func TestUnmaskedBytesUnchanged(t *testing.T) {
	in := `{ "kind" : "PodList", "items" : [ {"metadata":{"name":"p\u00e9","labels":{"b":"1","a":"2"}},"spec":{"x":1.50}} , null ], "metadata" : {"resourceVersion":"9"} }`
	var out bytes.Buffer
	if _, err := New(rules()).Stream(&out, strings.NewReader(in), ""); err != nil {
		t.Fatal(err)
	}
	// Only the whitespace between items and after the array is not kept.
	want := `{ "kind" : "PodList", "items" : [{"metadata":{"name":"p\u00e9","labels":{"b":"1","a":"2"}},"spec":{"x":1.50}},null],"metadata" : {"resourceVersion":"9"}}`
	if out.String() != want {
		t.Fatalf("got  %s\nwant %s", out.String(), want)
	}
}

func TestStreamRefusesAmbiguousLists(t *testing.T) {
	for _, in := range []string{
		`{"kind":"SecretList","items":[],"items":[{"data":{"a":"b"}}]}`,
		`{"kind":"SecretList","items":[],"kind":"Secret","data":{"a":"b"}}`,
		`{"kind":"Secret","kind":"Pod","data":{"a":"b"}}`,
		`{"kind":"Table","rows":[],"rows":[]}`,
	} {
		if _, err := New(nil).Stream(io.Discard, strings.NewReader(in), ""); err == nil {
			t.Errorf("Stream(%s) succeeded, want an error", in)
		}
	}
}

func TestWatchFraming(t *testing.T) {
	in := `{"TYPE":"ADDED","Object":{"kind":"Secret","data":{"a":"YQ=="}},"extra":1} {"type":"DELETED","object":null}` + "\n"
	var out bytes.Buffer
	if _, err := New(nil).Watch(&out, strings.NewReader(in), "", nil); err != nil {
		t.Fatal(err)
	}
	want := `{"type":"ADDED","object":{"kind":"Secret","data":{"a":"` + PlaceholderB64 + `"}}}` + "\n" + `{"type":"DELETED","object":null}` + "\n"
	if out.String() != want {
		t.Fatalf("got  %s\nwant %s", out.String(), want)
	}
	for _, bad := range []string{`{"type":1,"object":{}}`, `{"type":"A","object":[1]}`, `[1]`, `{"type":"A","object":{"a":}`} {
		if _, err := New(nil).Watch(io.Discard, strings.NewReader(bad), "", nil); err == nil {
			t.Errorf("Watch(%s) succeeded, want an error", bad)
		}
	}
}

// TestTableWatchRemembersColumns: Table watch events after the first carry no
// column definitions; the cells of a masked column stay masked.
func TestTableWatchRemembersColumns(t *testing.T) {
	first := `{"type":"ADDED","object":{"kind":"Table","columnDefinitions":[{"name":"Name"},{"name":"Value"}],"rows":[{"cells":["w1","` + secretValue + `"]}]}}`
	next := `{"type":"MODIFIED","object":{"kind":"Table","columnDefinitions":null,"rows":[{"cells":["w1","` + secretValue + `"]}]}}`
	var out bytes.Buffer
	if _, err := New(rules()).Watch(&out, strings.NewReader(first+next), "Widget", nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), secretValue) || strings.Count(out.String(), `"w1"`) != 2 {
		t.Fatalf("table watch: %s", out.String())
	}
}

func TestPathsMatchReference(t *testing.T) {
	in := `{"kind":"Widget","metadata":{"name":"w"},"spec":{"b":"x","a":["y",{"c":"z"}]}}`
	_, res := stream(t, New(rules()), in, "")
	var obj map[string]any
	_ = json.Unmarshal([]byte(in), &obj)
	want := New(rules()).Object(obj, "", "")
	if fmt.Sprint(sorted(res.Paths)) != fmt.Sprint(sorted(want)) || res.Objects != 1 {
		t.Fatalf("paths %v, want %v", res.Paths, want)
	}
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func BenchmarkStreamConfigMapList(b *testing.B) {
	var items []string
	for i := range 5000 {
		items = append(items, fmt.Sprintf(`{"metadata":{"name":"c%d","namespace":"ns","uid":"0b3e0c4a-6f8e-4d27-9b1e-%012d","resourceVersion":"%d","creationTimestamp":"2026-11-25T10:00:00Z"},"data":{"color":"blue","password":"value"}}`, i, i, 1000+i))
	}
	in := []byte(`{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[` + strings.Join(items, ",") + `]}`)
	m := New(rules())
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := m.Stream(io.Discard, bytes.NewReader(in), ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWatch(b *testing.B) {
	ev := []byte(`{"type":"MODIFIED","object":` + strings.Replace(secretJSON("w"), `{"metadata"`, `{"kind":"Secret","apiVersion":"v1","metadata"`, 1) + "}\n")
	in := bytes.Repeat(ev, 1000)
	m := New(nil)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := m.Watch(io.Discard, bytes.NewReader(in), "Secret", nil); err != nil {
			b.Fatal(err)
		}
	}
}
