package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/eks"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/backend/jit"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/config"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
	"github.com/kubectl-agent/kubectl-agent/pkg/tlog"
	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

// testServer is a broker with a real SQLite store and the OIDC stand-in, and
// a JIT backend whose cluster does not answer: these tests stop before any
// credential is issued, and must never reach it.
func testServer(t testing.TB) (*Server, *oidcissuer.Issuer, *httptest.Server) {
	t.Helper()
	iss, err := oidcissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	hs := httptest.NewUnstartedServer(nil)
	publicURL := "http://" + hs.Listener.Addr().String()
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: %[1]s
issuers:
- issuer: %[2]s
  preset: github
  audiences: [https://broker.test]
clusters:
- name: test
  server: https://127.0.0.1:1
  backend: {type: kubernetes, kubernetes: {namespace: agent-broker}}
trustRules:
- name: r
  issuer: %[2]s
  match: {repository: "acme/*"}
  cluster: test
  grant: {namespaces: [apps], rules: [{verbs: [get], resources: [pods]}]}
`, publicURL, iss.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := jit.New(jit.Config{Client: cs, Namespace: "agent-broker"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(context.Background(), Options{Config: cfg, Store: st, Backends: map[string]backend.Backend{"test": b}})
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = srv.Handler()
	hs.Start()
	t.Cleanup(hs.Close)
	return srv, iss, hs
}

func sessionKey(t testing.TB) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(pub)
}

func TestParseTokenRequest(t *testing.T) {
	key := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	ok := url.Values{"grant_type": {api.GrantTypeTokenExchange}, "subject_token": {"t"},
		"subject_token_type": {api.TokenTypeIDToken}, "audience": {"prod"}, api.FormSessionKey: {key}}
	req, e := ParseTokenRequest(ok)
	if e != nil || req.Cluster != "prod" || req.SubjectToken != "t" || len(req.SessionKey) != 32 {
		t.Fatalf("= %+v, %v", req, e)
	}
	for field, want := range map[string]string{
		"grant_type": "grant_type field is missing", "subject_token": "subject_token field is missing",
		"audience": "audience field is missing", api.FormSessionKey: "session_key field is missing",
	} {
		v := url.Values{}
		for k, vs := range ok {
			if k != field {
				v[k] = vs
			}
		}
		if _, e := ParseTokenRequest(v); e == nil || !strings.Contains(e.Description, want) {
			t.Errorf("without %s: %v", field, e)
		}
	}
	v := url.Values{}
	for k, vs := range ok {
		v[k] = vs
	}
	v.Set("actor_token", "x")
	if _, e := ParseTokenRequest(v); e == nil || !strings.Contains(e.Description, "actor_token") {
		t.Errorf("actor_token: %v", e)
	}
}

// The session endpoints refuse calls without a valid session token and proof.
func TestSessionCallsNeedDPoP(t *testing.T) {
	_, _, hs := testServer(t)
	for _, tc := range []struct{ authz, proof, want string }{
		{"", "", "session calls need Authorization: DPoP"},
		{"Bearer abc", "", "session calls need Authorization: DPoP"},
		{"DPoP abc", "", "not a signed JWT"},
	} {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/v1/sessions/abc", nil)
		if tc.authz != "" {
			req.Header.Set("Authorization", tc.authz)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		_ = json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized || e.Code != "invalid_token" || !strings.Contains(e.Description, tc.want) ||
			!strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "DPoP ") {
			t.Errorf("authz %q: %d %+v %q", tc.authz, res.StatusCode, e, res.Header.Get("WWW-Authenticate"))
		}
	}
}

// FuzzParseTokenRequest: any form body parses or is refused with
// invalid_request / unsupported_grant_type, never a panic.
func FuzzParseTokenRequest(f *testing.F) {
	key := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	f.Add("grant_type=" + url.QueryEscape(api.GrantTypeTokenExchange) + "&subject_token=a.b.c&subject_token_type=" +
		url.QueryEscape(api.TokenTypeIDToken) + "&audience=prod&session_key=" + key)
	f.Add("grant_type=x&grant_type=y")
	f.Add("session_key=%ZZ&audience=")
	f.Add("subject_token=" + strings.Repeat("A", 20000))
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		req, e := ParseTokenRequest(form)
		switch {
		case e == nil && (req == nil || len(req.SessionKey) != ed25519.PublicKeySize || req.Cluster == "" || req.SubjectToken == ""):
			t.Fatalf("accepted an incomplete request: %+v", req)
		case e != nil && e.Code != "invalid_request" && e.Code != "unsupported_grant_type":
			t.Fatalf("unexpected code %q", e.Code)
		}
	})
}

// FuzzTokenHandler: whatever the body and content type, the token endpoint
// answers with an RFC 6749 error (4xx, or 503 when it could not check), never
// 200, 500 or a panic, and creates no session.
func FuzzTokenHandler(f *testing.F) {
	srv, iss, _ := testServer(f)
	h := srv.Handler()
	key := sessionKey(f)
	good := iss.Mint(iss.GitHubClaims("acme/app", "1", "https://wrong-audience"))
	form := func(tok string) string {
		return url.Values{"grant_type": {api.GrantTypeTokenExchange}, "subject_token": {tok},
			"subject_token_type": {api.TokenTypeIDToken}, "audience": {"test"}, api.FormSessionKey: {key}}.Encode()
	}
	ct := "application/x-www-form-urlencoded"
	f.Add(ct, form(good))
	f.Add(ct, form(iss.Sign("none", "", iss.GitHubClaims("acme/app", "1", "https://broker.test"))))
	f.Add(ct, form("x.y.z"))
	f.Add(ct, form(strings.Repeat("a", 100)))
	f.Add("application/json", `{"grant_type":"x"}`)
	f.Add(ct+"; charset=utf-8", "%%%")
	f.Fuzz(func(t *testing.T, contentType, body string) {
		req := httptest.NewRequest(http.MethodPost, api.PathToken, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK || rec.Code == http.StatusInternalServerError {
			t.Fatalf("status %d for %q %q: %s", rec.Code, contentType, body, rec.Body)
		}
		var e api.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == "" {
			t.Fatalf("body is not an RFC 6749 error: %q", rec.Body)
		}
		if strings.Contains(e.Description, body) && len(body) > 40 {
			t.Fatalf("the description echoes the request")
		}
	})
}

// The log's checkpoint signer (tlog.NewSigner, which openLog uses) works for
// every key, including those whose base64 form holds '+' (which the note key
// format also uses as separator).
func TestNoteSignerAnyKey(t *testing.T) {
	plus := 0
	for i := 0; i < 64; i++ {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		vkey, err := tlog.VerifierKey("broker.test/transcripts", pub)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(vkey, "+") > 2 {
			plus++
		}
		signer, err := tlog.NewSigner("broker.test/transcripts", priv)
		if err != nil {
			t.Fatalf("key %d (%s): %v", i, vkey, err)
		}
		verifier, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := note.Sign(&note.Note{Text: "hello\n"}, signer)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(msg, note.VerifierList(verifier)); err != nil {
			t.Fatalf("checkpoint does not verify with %s: %v", vkey, err)
		}
	}
	if plus == 0 {
		t.Log("no key with '+' in 64 tries (unlikely)")
	}
}

// Each cluster's backend is built from its config: kubernetes from a
// kubeconfig, eks from its settings (strictly: an unknown field is refused).
func TestBuildBackends(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgText := func(eks string) string {
		return fmt.Sprintf(`apiVersion: kubectl-agent.io/v1alpha1
kind: BrokerConfig
publicURL: https://broker.test
issuers: [{issuer: "https://ci.example.com"}]
clusters:
- name: k
  server: https://k.test
  backend: {type: kubernetes, kubernetes: {kubeconfig: %s, namespace: ab}}
- name: e
  server: https://e.test
  backend: {type: eks, eks: %s}
trustRules:
- {name: r, issuer: "https://ci.example.com", cluster: e, match: {sub: x}, grant: {iamRole: "arn:aws:iam::123456789012:role/x"}}
`, kc, eks)
	}
	cfg, err := config.Parse(filepath.Join(dir, "b.yaml"), []byte(cfgText(`{clusterName: prod, region: eu-west-1}`)))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := BuildBackends(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := bs["k"].(*jit.Backend); !ok {
		t.Errorf("cluster k: %T, want the jit backend", bs["k"])
	}
	if _, ok := bs["e"].(*eks.Backend); !ok {
		t.Errorf("cluster e: %T, want the eks backend", bs["e"])
	}
	cfg, err = config.Parse(filepath.Join(dir, "b.yaml"), []byte(cfgText(`{clusterName: prod, regoin: eu-west-1}`)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildBackends(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `cluster e: backend.eks: json: unknown field "regoin"`) {
		t.Errorf("unknown eks field: %v", err)
	}
}

// Serve speaks TLS with the configured certificate and stops cleanly.
func TestServeTLS(t *testing.T) {
	srv, _, _ := testServer(t)
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	srv.cfg.TLS = &config.TLS{CertFile: certFile, KeyFile: keyFile}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := client.Get("https://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("GET over TLS: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil {
		t.Errorf("healthz over TLS: %d, tls %v", res.StatusCode, res.TLS != nil)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}
