package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
)

const secretValue = "hunter2-top-secret"

var secretB64 = base64.StdEncoding.EncodeToString([]byte(secretValue))

func rules() []Rule {
	return []Rule{
		{Kinds: []string{"ConfigMap"}, Keys: []*regexp.Regexp{regexp.MustCompile(`(?i)(password|token)`)}},
		{Kinds: []string{"Widget"}},
		{Kinds: []string{"Gadget"}, Keys: []*regexp.Regexp{regexp.MustCompile(`^apiKey$`)}},
	}
}

func lastApplied(obj string) string {
	b, _ := json.Marshal(obj)
	return string(b)
}

func secretJSON(name string) string {
	inner := fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":%q},"data":{"password":%q},"stringData":{"plain":%q}}`, name, secretB64, secretValue)
	return fmt.Sprintf(`{"metadata":{"name":%q,"annotations":{%q:%s}},"data":{"password":%q},"stringData":{"plain":%q},"type":"Opaque"}`,
		name, LastAppliedAnnotation, lastApplied(inner), secretB64, secretValue)
}

func mustNotLeak(t *testing.T, out []byte) {
	t.Helper()
	if bytes.Contains(out, []byte(secretValue)) || bytes.Contains(out, []byte(secretB64)) {
		t.Fatalf("secret value leaked:\n%s", out)
	}
	// The annotation's JSON is itself escaped inside a JSON string; decode
	// everything once more to be sure nothing hides behind escapes.
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	flat, _ := json.Marshal(v)
	if strings.Contains(strings.ReplaceAll(string(flat), `\"`, `"`), secretB64) {
		t.Fatalf("secret value leaked after unescaping:\n%s", flat)
	}
}

func stream(t *testing.T, m *Masker, in, hint string) ([]byte, Result) {
	t.Helper()
	var buf bytes.Buffer
	res, err := m.Stream(&buf, strings.NewReader(in), hint)
	if err != nil {
		t.Fatalf("Stream: %v\ninput: %s", err, in)
	}
	return buf.Bytes(), res
}

func TestSecretObject(t *testing.T) {
	in := strings.Replace(secretJSON("s1"), `{"metadata"`, `{"kind":"Secret","apiVersion":"v1","metadata"`, 1)
	out, res := stream(t, New(nil), in, "")
	mustNotLeak(t, out)
	var s struct {
		Data       map[string]string `json:"data"`
		StringData map[string]string `json:"stringData"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatal(err)
	}
	dec, err := base64.StdEncoding.DecodeString(s.Data["password"])
	if err != nil || string(dec) != Placeholder {
		t.Fatalf("data.password = %q (%v), want base64 of the placeholder", s.Data["password"], err)
	}
	if s.StringData["plain"] != Placeholder {
		t.Fatalf("stringData.plain = %q", s.StringData["plain"])
	}
	want := []string{"metadata.annotations." + LastAppliedAnnotation + "#data.password", "metadata.annotations." + LastAppliedAnnotation + "#stringData.plain", "data.password", "stringData.plain"}
	if strings.Join(res.Paths, ",") != strings.Join(want, ",") || res.Objects != 1 {
		t.Fatalf("paths = %v (objects %d), want %v", res.Paths, res.Objects, want)
	}
}

func TestSecretListStreamsItems(t *testing.T) {
	var items []string
	for i := range 3 {
		items = append(items, secretJSON(fmt.Sprintf("s%d", i)))
	}
	in := `{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[` + strings.Join(items, ",") + `]}`
	out, res := stream(t, New(nil), in, "")
	mustNotLeak(t, out)
	if res.Objects != 3 || !strings.HasPrefix(res.Paths[0], "items[0].") {
		t.Fatalf("result = %+v", res)
	}
	var l struct {
		Metadata map[string]string `json:"metadata"`
		Items    []map[string]any  `json:"items"`
	}
	if err := json.Unmarshal(out, &l); err != nil || len(l.Items) != 3 || l.Metadata["resourceVersion"] != "7" {
		t.Fatalf("list = %+v, %v", l, err)
	}
}

func TestKindAfterItemsStillMasked(t *testing.T) {
	in := `{"items":[` + secretJSON("a") + `],"kind":"SecretList","apiVersion":"v1"}`
	out, _ := stream(t, New(nil), in, "")
	mustNotLeak(t, out)
}

func TestV1ListMixedKinds(t *testing.T) {
	sec := strings.Replace(secretJSON("a"), `{"metadata"`, `{"kind":"Secret","metadata"`, 1)
	in := `{"kind":"List","apiVersion":"v1","items":[{"kind":"ConfigMap","metadata":{"name":"c"},"data":{"dbPassword":"` + secretValue + `","color":"blue"}},` + sec + `]}`
	out, _ := stream(t, New(rules()), in, "")
	mustNotLeak(t, out)
	if !bytes.Contains(out, []byte(`"color":"blue"`)) {
		t.Fatalf("unmatched ConfigMap key was masked: %s", out)
	}
}

func TestConfigMapWithoutRulePasses(t *testing.T) {
	in := `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"c"},"data":{"password":"visible"}}]}`
	out, res := stream(t, New(nil), in, "")
	if res.Objects != 0 || !bytes.Contains(out, []byte("visible")) {
		t.Fatalf("ConfigMap masked with no rule: %s", out)
	}
}

func TestConfigMapBinaryData(t *testing.T) {
	in := `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"},"binaryData":{"token":"` + secretB64 + `"}}`
	out, _ := stream(t, New(rules()), in, "")
	mustNotLeak(t, out)
	if !bytes.Contains(out, []byte(PlaceholderB64)) {
		t.Fatalf("binaryData not replaced by base64 placeholder: %s", out)
	}
}

func TestTableRowsObjectsAndCells(t *testing.T) {
	// includeObject=Object: rows carry the full Secret.
	sec := strings.Replace(secretJSON("a"), `{"metadata"`, `{"kind":"Secret","apiVersion":"v1","metadata"`, 1)
	in := `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[{"name":"Name"},{"name":"Type"},{"name":"Data"}],"rows":[{"cells":["a","Opaque",1],"object":` + sec + `}]}`
	out, _ := stream(t, New(nil), in, "secrets")
	mustNotLeak(t, out)
	// includeObject=Metadata: PartialObjectMetadata carrying the annotation.
	pom := `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"a","annotations":{"` + LastAppliedAnnotation + `":` + lastApplied(`{"kind":"Secret","data":{"k":"`+secretB64+`"}}`) + `}}}`
	in = `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[{"name":"Name"}],"rows":[{"cells":["a"],"object":` + pom + `}]}`
	out, _ = stream(t, New(nil), in, "")
	mustNotLeak(t, out)
	// A kind named by a rule: its cells are masked, Name is kept.
	in = `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[{"name":"Name"},{"name":"Value"},{"name":"Count"}],"rows":[{"cells":["w1","` + secretValue + `",3]}]}`
	out, _ = stream(t, New(rules()), in, "Widget")
	mustNotLeak(t, out)
	if !bytes.Contains(out, []byte(`"w1"`)) || bytes.Contains(out, []byte(`,3]`)) {
		t.Fatalf("widget table: %s", out)
	}
}

func TestPartialObjectMetadataList(t *testing.T) {
	in := `{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{},"items":[{"kind":"PartialObjectMetadata","metadata":{"name":"a","annotations":{"` + LastAppliedAnnotation + `":"{not json` + secretValue + `"}}}]}`
	out, res := stream(t, New(nil), in, "")
	mustNotLeak(t, out)
	if res.Objects != 1 {
		t.Fatalf("result %+v", res)
	}
}

func TestGenericKinds(t *testing.T) {
	in := `{"kind":"Widget","apiVersion":"x.io/v1","metadata":{"name":"w"},"spec":{"inner":{"v":"` + secretValue + `"},"n":5}}`
	out, _ := stream(t, New(rules()), in, "")
	mustNotLeak(t, out)
	if !bytes.Contains(out, []byte(`"name":"w"`)) {
		t.Fatalf("metadata masked: %s", out)
	}
	in = `{"kind":"Gadget","apiVersion":"x.io/v1","metadata":{"name":"g"},"spec":{"apiKey":"` + secretValue + `","size":"large"}}`
	out, _ = stream(t, New(rules()), in, "")
	mustNotLeak(t, out)
	if !bytes.Contains(out, []byte(`"large"`)) {
		t.Fatalf("unmatched key masked: %s", out)
	}
}

func TestLastAppliedOnAnyKind(t *testing.T) {
	// A Deployment whose annotation holds a Secret (unusual, but it is the
	// annotation's content that counts).
	in := `{"kind":"Deployment","metadata":{"name":"d","annotations":{"` + LastAppliedAnnotation + `":` + lastApplied(`{"kind":"Secret","data":{"k":"`+secretB64+`"}}`) + `}}}`
	out, _ := stream(t, New(nil), in, "")
	mustNotLeak(t, out)
}

func TestNumbersKeepPrecision(t *testing.T) {
	in := `{"kind":"Secret","metadata":{"name":"s","generation":9007199254740993},"data":{"a":"` + secretB64 + `"}}`
	out, _ := stream(t, New(nil), in, "")
	if !bytes.Contains(out, []byte("9007199254740993")) {
		t.Fatalf("large integer lost precision: %s", out)
	}
}

func TestNotAnObjectFails(t *testing.T) {
	for _, in := range []string{`[1]`, `"x"`, ``, `{"kind":"Secret"`, `{"a":1} {"b":2}`, `{"kind":"SecretList","items":{"a":1}}`} {
		if _, err := New(nil).Stream(io.Discard, strings.NewReader(in), ""); err == nil {
			t.Errorf("Stream(%q) succeeded, want an error", in)
		}
	}
}

func TestWatch(t *testing.T) {
	sec := strings.Replace(secretJSON("a"), `{"metadata"`, `{"kind":"Secret","apiVersion":"v1","metadata"`, 1)
	tbl := `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[{"name":"Name"}],"rows":[{"cells":["a"],"object":` + sec + `}]}`
	in := `{"type":"ADDED","object":` + sec + `}` + "\n" +
		`{"type":"MODIFIED","object":` + tbl + `}` + "\n" +
		`{"type":"BOOKMARK","object":{"kind":"Secret","apiVersion":"v1","metadata":{"resourceVersion":"12","annotations":{"k8s.io/initial-events-end":"true"}}}}` + "\n"
	var out bytes.Buffer
	flushes := 0
	res, err := New(nil).Watch(&out, strings.NewReader(in), "Secret", func() { flushes++ })
	if err != nil {
		t.Fatal(err)
	}
	if flushes != 3 || res.Objects != 2 {
		t.Fatalf("flushes=%d result=%+v", flushes, res)
	}
	dec := json.NewDecoder(&out)
	n := 0
	for dec.More() {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		mustNotLeak(t, ev.Object)
		n++
	}
	if n != 3 {
		t.Fatalf("%d events out, want 3", n)
	}
}

func TestBytesUnchanged(t *testing.T) {
	in := []byte(`{"kind":"Pod","metadata":{"name":"p"}}`)
	out, res, err := New(nil).Bytes(in, "")
	if err != nil || res.Objects != 0 || !bytes.Equal(out, in) {
		t.Fatalf("Bytes changed an unmasked object: %s %+v %v", out, res, err)
	}
}

func TestMaxPaths(t *testing.T) {
	var items []string
	for i := range 5 {
		items = append(items, secretJSON(fmt.Sprint(i)))
	}
	m := New(nil)
	m.MaxPaths = 3
	_, res := stream(t, m, `{"kind":"SecretList","items":[`+strings.Join(items, ",")+`]}`, "")
	if len(res.Paths) != 3 || res.MorePaths == 0 || res.Objects != 5 {
		t.Fatalf("result = %+v", res)
	}
}

// FuzzStream checks that any input either fails (the proxy then fails
// closed) or yields JSON in which a Secret's value does not appear.
func FuzzStream(f *testing.F) {
	sec := strings.Replace(secretJSON("a"), `{"metadata"`, `{"kind":"Secret","metadata"`, 1)
	for _, s := range []string{
		sec,
		`{"kind":"SecretList","items":[` + secretJSON("b") + `]}`,
		`{"kind":"List","items":[` + sec + `]}`,
		`{"kind":"Table","columnDefinitions":[{"name":"Name"}],"rows":[{"cells":["a"],"object":` + sec + `}]}`,
		`{"kind":"ConfigMap","data":{"password":"x"}}`,
		`{"items":null,"kind":"SecretList"}`,
		`{}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		if _, err := New(rules()).Stream(&out, bytes.NewReader(in), "Secret"); err != nil {
			return
		}
		if !json.Valid(out.Bytes()) {
			t.Fatalf("invalid JSON out for %q: %q", in, out.Bytes())
		}
		// Whatever Secret is in the output must have only placeholders.
		var v any
		_ = json.Unmarshal(out.Bytes(), &v)
		checkKnownShapes(t, v)
	})
}

// checkKnownShapes checks the places where the masker looks for objects: the
// document itself, list items and Table rows' objects.
func checkKnownShapes(t *testing.T, v any) {
	o, ok := v.(map[string]any)
	if !ok {
		return
	}
	checkSecret(t, o)
	if items, ok := o["items"].([]any); ok {
		for _, it := range items {
			if io, ok := it.(map[string]any); ok {
				checkSecret(t, io)
			}
		}
	}
	if rows, ok := o["rows"].([]any); ok && o["kind"] == "Table" {
		for _, r := range rows {
			if rm, ok := r.(map[string]any); ok {
				if ro, ok := rm["object"].(map[string]any); ok {
					checkSecret(t, ro)
				}
			}
		}
	}
}

func checkSecret(t *testing.T, x map[string]any) {
	if x["kind"] != "Secret" {
		return
	}
	for _, f := range []string{"data", "stringData"} {
		if d, ok := x[f].(map[string]any); ok {
			for k, val := range d {
				if val != Placeholder && val != PlaceholderB64 {
					t.Fatalf("Secret %s.%s = %v not masked", f, k, val)
				}
			}
		} else if x[f] != nil && x[f] != Placeholder && x[f] != PlaceholderB64 {
			t.Fatalf("Secret %s = %v not masked", f, x[f])
		}
	}
}

// FuzzWatch checks the watch framing parser the same way.
func FuzzWatch(f *testing.F) {
	f.Add([]byte(`{"type":"ADDED","object":{"kind":"Secret","data":{"a":"b"}}}` + "\n"))
	f.Add([]byte(`{"type":"ERROR","object":{"kind":"Status","code":410}}{"type":"X"}`))
	f.Add([]byte(`{"type":"ADDED","object":null}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		_, _ = New(rules()).Watch(&out, bytes.NewReader(in), "", nil)
		dec := json.NewDecoder(&out)
		for dec.More() {
			var ev map[string]any
			if err := dec.Decode(&ev); err != nil {
				t.Fatalf("invalid watch output: %v", err)
			}
			checkKnownShapes(t, ev["object"])
		}
	})
}

func BenchmarkStreamSecretList(b *testing.B) {
	var items []string
	for i := range 5000 {
		items = append(items, secretJSON(fmt.Sprint(i)))
	}
	in := []byte(`{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":[` + strings.Join(items, ",") + `]}`)
	m := New(nil)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := m.Stream(io.Discard, bytes.NewReader(in), ""); err != nil {
			b.Fatal(err)
		}
	}
}
