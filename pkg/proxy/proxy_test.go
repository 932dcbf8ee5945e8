package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/mask"
	"github.com/kubectl-agent/kubectl-agent/pkg/policy"
	"github.com/kubectl-agent/kubectl-agent/pkg/transcript"
)

const (
	upstreamToken = "upstream-credential"
	secretValue   = "hunter2-top-secret"
)

// upstream is a stand-in apiserver on loopback TLS: it records what reached
// it and answers with handler.
type upstream struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []*http.Request
	bodies  [][]byte
	handler http.HandlerFunc
}

func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{handler: h}
	u.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(context.Background()))
		u.bodies = append(u.bodies, b)
		u.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+upstreamToken {
			http.Error(w, "wrong upstream credential", http.StatusUnauthorized)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		u.handler(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) last(t testing.TB) (*http.Request, []byte) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("nothing reached the upstream")
	}
	return u.reqs[len(u.reqs)-1], u.bodies[len(u.bodies)-1]
}

func (u *upstream) config() *rest.Config {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: u.srv.Certificate().Raw})
	return &rest.Config{Host: u.srv.URL, BearerToken: upstreamToken, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
}

// sink records events; fail makes Append fail.
type sink struct {
	mu   sync.Mutex
	evs  []transcript.Event
	fail bool
}

func (s *sink) Append(_ context.Context, ev transcript.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("disk full")
	}
	s.evs = append(s.evs, ev)
	return nil
}

func (s *sink) requests() []transcript.RequestEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []transcript.RequestEvent
	for _, ev := range s.evs {
		if ev.Request != nil {
			out = append(out, *ev.Request)
		}
	}
	return out
}

const testPolicy = `apiVersion: kubectl-agent.io/v1alpha1
kind: Policy
defaultAction: allow
rules:
- name: never-delete-namespaces
  action: deny
  verbs: ["delete"]
  resources: ["namespaces"]
- name: prod-needs-a-human
  action: approve
  verbs: ["create", "update", "patch", "delete"]
  namespaces: ["prod"]
mask:
- kinds: ["ConfigMap"]
  keys: ["(?i)password"]
`

func startProxy(t testing.TB, u *upstream, mod func(*Options)) *Proxy {
	t.Helper()
	pol, err := policy.Parse([]byte(testPolicy), "test")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Upstream: u.config(), Policy: pol}
	if mod != nil {
		mod(&opts)
	}
	px, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := px.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	return px
}

func client(t testing.TB, px *Proxy) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(px.CAData()) {
		t.Fatal("proxy CA does not parse")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableCompression: true}}
}

// do sends a request with the proxy's token and returns status and body.
func do(t testing.TB, px *Proxy, method, path string, hdr map[string]string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, px.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	req.Header.Set("Authorization", "Bearer "+px.Token())
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client(t, px).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func secretJSON() string {
	return `{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s","namespace":"ns"},"data":{"password":"` +
		"aHVudGVyMi10b3Atc2VjcmV0" + `"},"stringData":{"plain":"` + secretValue + `"}}`
}

func jsonHandler(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

func noLeak(t testing.TB, body string) {
	t.Helper()
	if strings.Contains(body, secretValue) || strings.Contains(body, "aHVudGVyMi10b3Atc2VjcmV0") {
		t.Fatalf("secret value leaked: %s", body)
	}
}

func TestJSONAccept(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "application/json"},
		{"application/json", "application/json"},
		{"application/vnd.kubernetes.protobuf, application/json", "application/json"},
		{"application/vnd.kubernetes.protobuf", "application/json"},
		{"application/cbor", "application/json"},
		{"*/*", "application/json"},
		{"application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
			"application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"},
		{"application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
			"application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io, application/json"},
		{"application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1", "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io, application/json"},
		{"application/cbor;as=Table;g=meta.k8s.io;v=v1", "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"},
		{";;;", "application/json"},
	} {
		if got := jsonAccept([]string{c.in}); got != c.want {
			t.Errorf("jsonAccept(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestAcceptRewrittenUpstream: whatever the child asks for, the cluster is
// asked for JSON (conversions kept), and never protobuf or CBOR.
func TestAcceptRewrittenUpstream(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":[],"rows":[]}`))
	px := startProxy(t, u, nil)
	for _, accept := range []string{
		"application/vnd.kubernetes.protobuf,application/json",
		"application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
		"application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
		"application/cbor",
	} {
		code, _, _ := do(t, px, "GET", "/api/v1/namespaces/ns/secrets", map[string]string{"Accept": accept}, nil)
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		r, _ := u.last(t)
		got := r.Header.Get("Accept")
		if strings.Contains(got, "protobuf") || strings.Contains(got, "cbor") || !strings.Contains(got, "application/json") {
			t.Fatalf("upstream Accept for %q = %q", accept, got)
		}
		if strings.Contains(accept, "as=") && !strings.Contains(got, "as=") {
			t.Fatalf("conversion lost: %q -> %q", accept, got)
		}
	}
}

func TestBearerToken(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{"kind":"Namespace","metadata":{"name":"default"}}`))
	px := startProxy(t, u, nil)
	for _, auth := range []string{"", "Bearer ", "Bearer wrong", "Basic " + px.Token(), px.Token(), "Bearer " + px.Token() + "x"} {
		req, _ := http.NewRequest("GET", px.URL()+"/api/v1/namespaces/default", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client(t, px).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("Authorization %q: status %d, want 401", auth, resp.StatusCode)
		}
	}
	if n := u.count(); n != 0 {
		t.Fatalf("%d unauthorized requests reached the upstream", n)
	}
	code, _, _ := do(t, px, "GET", "/api/v1/namespaces/default", map[string]string{"Authorization": "bearer " + px.Token()}, nil)
	if code != 200 {
		t.Fatalf("lower-case scheme: status %d", code)
	}
	r, _ := u.last(t)
	if got := r.Header.Get("Authorization"); got != "Bearer "+upstreamToken {
		t.Fatalf("upstream saw Authorization %q, want the run's own credential", got)
	}
}

// rawRequest sends exactly this request line (no client-side path
// cleaning).
func rawRequest(t *testing.T, px *Proxy, method, rawPath string) (int, string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(px.CAData())
	addr := strings.TrimPrefix(px.URL(), "https://")
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", method, rawPath, addr, px.Token())
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestNonCanonicalPathRefused(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{}`))
	s := &sink{}
	px := startProxy(t, u, func(o *Options) { o.Sink = s })
	for _, p := range []string{
		"/api/v1/namespaces/%76ictim",
		"/api/v1/namespaces//victim",
		"/api/v1/namespaces/x/../victim",
		"/api/v1/namespaces/a%2Fb",
		"/api/v1/namespaces/victim/",
		"/api/v1/namespaces/./victim",
	} {
		code, body := rawRequest(t, px, "DELETE", p)
		if code != http.StatusBadRequest || !strings.Contains(body, `"kind":"Status"`) {
			t.Errorf("DELETE %s: %d %s, want 400 with a Status", p, code, body)
		}
	}
	if n := u.count(); n != 0 {
		t.Fatalf("%d non-canonical requests reached the upstream", n)
	}
	if evs := s.requests(); len(evs) != 6 || evs[0].Decision != "refused" || evs[0].ResponseStatus.Code != 400 {
		t.Fatalf("refusals recorded: %+v", evs)
	}
}

func TestDenyAnswersForbidden(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{}`))
	px := startProxy(t, u, nil)
	code, _, body := do(t, px, "DELETE", "/api/v1/namespaces/victim", nil, nil)
	if code != http.StatusForbidden || !strings.Contains(body, "never-delete-namespaces") || !strings.Contains(body, `"reason":"Forbidden"`) {
		t.Fatalf("%d %s", code, body)
	}
	if u.count() != 0 {
		t.Fatal("a denied request reached the upstream")
	}
	if c := px.Counts(); c.Denied != 1 || c.Allowed != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestRequireRecording(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{"kind":"Namespace","metadata":{"name":"default"}}`))
	s := &sink{fail: true}
	px := startProxy(t, u, func(o *Options) { o.Sink, o.RequireRecording = s, true })
	code, _, body := do(t, px, "GET", "/api/v1/namespaces/default", nil, nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "recording is required") {
		t.Fatalf("%d %s, want 503", code, body)
	}
	if u.count() != 0 {
		t.Fatal("an unrecorded request reached the upstream")
	}
	// The same sink working: the request is recorded before it goes, then
	// again when it is done.
	s.mu.Lock()
	s.fail = false
	s.mu.Unlock()
	if code, _, _ := do(t, px, "GET", "/api/v1/namespaces/default", nil, nil); code != 200 {
		t.Fatalf("status %d", code)
	}
	evs := s.requests()
	if len(evs) != 2 || evs[0].Stage != "RequestReceived" || evs[1].Stage != "ResponseComplete" || evs[0].AuditID != evs[1].AuditID {
		t.Fatalf("events %+v", evs)
	}
	// Without RequireRecording a failing sink does not stop requests.
	px2 := startProxy(t, u, func(o *Options) { o.Sink = &sink{fail: true} })
	if code, _, _ := do(t, px2, "GET", "/api/v1/namespaces/default", nil, nil); code != 200 {
		t.Fatalf("status %d without RequireRecording", code)
	}
}

type approver struct {
	d     policy.Decision
	err   error
	calls atomic.Int32
	held  *HeldRequest
}

func (a *approver) Approve(_ context.Context, h *HeldRequest) (policy.Decision, error) {
	a.calls.Add(1)
	a.held = h
	return a.d, a.err
}

func TestApprover(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{"kind":"ConfigMap","metadata":{"name":"c"}}`))
	body := []byte(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"}}`)
	hdr := map[string]string{"Content-Type": "application/json"}
	for _, c := range []struct {
		name     string
		a        *approver
		wantCode int
		wantMsg  string
	}{
		{"approve", &approver{d: policy.Decision{Action: policy.Allow}}, 200, ""},
		{"deny", &approver{d: policy.Decision{Action: policy.Deny, Message: "not today"}}, 403, "not today"},
		{"error", &approver{err: errors.New("broker unreachable")}, 403, "broker unreachable"},
		{"approve action", &approver{d: policy.Decision{Action: policy.Approve}}, 403, "not approved"},
		{"none", nil, 403, "no approver"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := u.count()
			px := startProxy(t, u, func(o *Options) {
				if c.a != nil {
					o.Approver = c.a
				}
			})
			code, _, resp := do(t, px, "POST", "/api/v1/namespaces/prod/configmaps", hdr, body)
			if code != c.wantCode || !strings.Contains(resp, c.wantMsg) {
				t.Fatalf("%d %s, want %d with %q", code, resp, c.wantCode, c.wantMsg)
			}
			forwarded := u.count() - before
			if (c.wantCode == 200) != (forwarded == 1) {
				t.Fatalf("%d requests forwarded", forwarded)
			}
			if c.a != nil {
				if c.a.calls.Load() != 1 || c.a.held.Attributes.Namespace != "prod" || c.a.held.Decision.Rule != "prod-needs-a-human" ||
					!bytes.Equal(c.a.held.Body, body) || c.a.held.Header.Get("Authorization") != "" {
					t.Fatalf("held request %+v", c.a.held)
				}
			}
			// Requests the policy allows never ask.
			if code, _, _ := do(t, px, "POST", "/api/v1/namespaces/dev/configmaps", hdr, body); code != 200 {
				t.Fatalf("allowed request: %d", code)
			}
			if c.a != nil && c.a.calls.Load() != 1 {
				t.Fatal("the approver was asked about an allowed request")
			}
		})
	}
}

func TestAuditIDForwarded(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{"kind":"Namespace","metadata":{"name":"default"}}`))
	s := &sink{}
	px := startProxy(t, u, func(o *Options) { o.Sink = s })
	// The child's own Audit-ID is not trusted: the proxy's goes upstream.
	do(t, px, "GET", "/api/v1/namespaces/default", map[string]string{"Audit-ID": "chosen-by-child"}, nil)
	r, _ := u.last(t)
	evs := s.requests()
	if len(evs) != 1 {
		t.Fatalf("events %+v", evs)
	}
	if got := r.Header.Values("Audit-Id"); len(got) != 1 || got[0] != evs[0].AuditID || got[0] == "chosen-by-child" {
		t.Fatalf("upstream Audit-ID %q, recorded %q", got, evs[0].AuditID)
	}
}

func TestMasksSecrets(t *testing.T) {
	list := `{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":[` + secretJSON() + `,` + secretJSON() + `]}`
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") == "true" {
			for range 2 {
				fmt.Fprintf(w, `{"type":"ADDED","object":%s}`+"\n", secretJSON())
				w.(http.Flusher).Flush()
			}
			return
		}
		if r.URL.Path == "/api/v1/namespaces/ns/secrets/s" {
			_, _ = io.WriteString(w, secretJSON())
			return
		}
		_, _ = io.WriteString(w, list)
	})
	s := &sink{}
	px := startProxy(t, u, func(o *Options) { o.Sink = s })
	for _, p := range []string{"/api/v1/namespaces/ns/secrets/s", "/api/v1/namespaces/ns/secrets", "/api/v1/namespaces/ns/secrets?watch=true"} {
		code, _, body := do(t, px, "GET", p, nil, nil)
		if code != 200 || !strings.Contains(body, mask.PlaceholderB64) {
			t.Fatalf("GET %s: %d %s", p, code, body)
		}
		noLeak(t, body)
	}
	evs := s.requests()
	for _, ev := range evs {
		noLeak(t, string(ev.ResponseObject))
	}
	// The watch was recorded when it started and when it ended.
	if n := len(evs); n != 4 || evs[2].Stage != "ResponseStarted" || evs[3].Stage != "ResponseComplete" || evs[2].AuditID != evs[3].AuditID {
		t.Fatalf("events %+v", evs)
	}
	if c := px.Counts(); c.Masked != 5 {
		t.Fatalf("masked %d objects, want 5", c.Masked)
	}
}

// TestGzipUpstreamMasked: a gzip answer (the apiserver compresses large
// ones) is unpacked and masked, not passed through compressed.
func TestGzipUpstreamMasked(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			t.Errorf("upstream was not offered gzip: %q", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, `{"kind":"SecretList","items":[`+secretJSON()+`]}`)
		_ = zw.Close()
	})
	px := startProxy(t, u, nil)
	code, hdr, body := do(t, px, "GET", "/api/v1/secrets", map[string]string{"Accept-Encoding": "gzip"}, nil)
	if code != 200 || hdr.Get("Content-Encoding") != "" || !strings.Contains(body, mask.PlaceholderB64) {
		t.Fatalf("%d %v %q", code, hdr, body)
	}
	noLeak(t, body)
}

// TestUnreadableAnswersFailClosed: an answer to a maskable request that the
// proxy cannot read is refused with 502, and none of it is passed on.
func TestUnreadableAnswersFailClosed(t *testing.T) {
	for _, c := range []struct{ name, ct, ce, body string }{
		{"protobuf", "application/vnd.kubernetes.protobuf", "", "k8s\x00" + secretValue},
		{"cbor", "application/cbor", "", secretValue},
		{"text", "text/plain", "", secretJSON()},
		{"garbled", "application/json;;=", "", secretJSON()},
		{"yaml", "application/yaml", "", "data:\n  password: " + secretValue},
		{"brotli", "application/json", "br", secretJSON()},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.ct)
				if c.ce != "" {
					w.Header().Set("Content-Encoding", c.ce)
				}
				_, _ = io.WriteString(w, c.body)
			})
			px := startProxy(t, u, nil)
			code, _, body := do(t, px, "GET", "/api/v1/namespaces/ns/secrets/s", nil, nil)
			if code != http.StatusBadGateway || !strings.Contains(body, "cannot mask") {
				t.Fatalf("%d %s, want 502", code, body)
			}
			noLeak(t, body)
		})
	}
}

// TestInvalidJSONCutsTheResponse: an answer that says JSON but is not cannot
// be masked; the proxy cuts the connection instead of passing it on.
func TestInvalidJSONCutsTheResponse(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{"kind":"SecretList","items":[`+secretJSON()+`,{"data":{"a":"`+secretValue+`"`))
	px := startProxy(t, u, nil)
	req, _ := http.NewRequest("GET", px.URL()+"/api/v1/secrets", nil)
	req.Header.Set("Authorization", "Bearer "+px.Token())
	resp, err := client(t, px).Do(req)
	if err != nil {
		return // cut before the headers
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the response was not cut: %s", b)
	}
	noLeak(t, string(b))
}

func protobufNamespace(t testing.TB, name string) []byte {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
	var buf bytes.Buffer
	if err := protobuf.NewSerializer(s, s).Encode(ns, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestProtobufBodyConverted(t *testing.T) {
	u := newUpstream(t, jsonHandler(`{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"team-a"}}`))
	s := &sink{}
	px := startProxy(t, u, func(o *Options) { o.Sink = s })
	body := protobufNamespace(t, "team-a")
	code, _, resp := do(t, px, "POST", "/api/v1/namespaces", map[string]string{"Content-Type": "application/vnd.kubernetes.protobuf"}, body)
	if code != 200 {
		t.Fatalf("%d %s", code, resp)
	}
	r, got := u.last(t)
	if r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("upstream Content-Type %q", r.Header.Get("Content-Type"))
	}
	var ns struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(got, &ns); err != nil || ns.Kind != "Namespace" || ns.Metadata.Name != "team-a" {
		t.Fatalf("upstream body %s (%v)", got, err)
	}
	if evs := s.requests(); len(evs) != 1 || !strings.Contains(string(evs[0].RequestObject), "team-a") {
		t.Fatalf("recorded %+v", evs)
	}
	// A protobuf body the proxy cannot read, and CBOR, are refused.
	before := u.count()
	for _, c := range []struct{ ct, body string }{
		{"application/vnd.kubernetes.protobuf", "k8s\x00\x0a\x0fexample.com/v1\x12\x06Widget"},
		{"application/cbor", "\xa1\x64kind\x69Namespace"},
	} {
		code, _, resp := do(t, px, "POST", "/api/v1/namespaces", map[string]string{"Content-Type": c.ct}, []byte(c.body))
		if code != http.StatusUnsupportedMediaType {
			t.Fatalf("%s: %d %s, want 415", c.ct, code, resp)
		}
	}
	if u.count() != before {
		t.Fatal("an unreadable body reached the upstream")
	}
}

// TestPassThroughLogs: pod logs are text and pass unparsed.
func TestPassThroughLogs(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "line 1\nline 2\n")
	})
	px := startProxy(t, u, nil)
	code, _, body := do(t, px, "GET", "/api/v1/namespaces/ns/pods/p/log", map[string]string{"Accept": "*/*"}, nil)
	if code != 200 || body != "line 1\nline 2\n" {
		t.Fatalf("%d %q", code, body)
	}
	r, _ := u.last(t)
	if r.Header.Get("Accept") != "*/*" {
		t.Fatalf("logs Accept rewritten to %q", r.Header.Get("Accept"))
	}
}

// TestFailedWatchPassesStatus: a watch the cluster refuses answers with one
// Status object, which must reach the client as it is.
func TestFailedWatchPassesStatus(t *testing.T) {
	status := `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets is forbidden","reason":"Forbidden","code":403}`
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, status)
	})
	px := startProxy(t, u, nil)
	code, _, body := do(t, px, "GET", "/api/v1/secrets?watch=true", nil, nil)
	if code != 403 || body != status {
		t.Fatalf("%d %s", code, body)
	}
}
