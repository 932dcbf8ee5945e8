package dpop

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func TestThumbprintMatchesGoJose(t *testing.T) {
	priv := newKey(t)
	pub := priv.Public().(ed25519.PublicKey)
	want, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if got := Thumbprint(pub); got != base64.RawURLEncoding.EncodeToString(want) {
		t.Fatalf("thumbprint %s, go-jose says %s", got, base64.RawURLEncoding.EncodeToString(want))
	}
}

// TestThumbprintRFC8037 checks the thumbprint against RFC 8037 Appendix A.3.
func TestThumbprintRFC8037(t *testing.T) {
	x, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if got, want := Thumbprint(ed25519.PublicKey(x)), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Fatalf("thumbprint %s, RFC 8037 says %s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	priv := newKey(t)
	now := time.Now()
	p, err := NewProof(priv, "POST", "https://Broker.example:443/v1/sessions/abc/credential?x=1#f", "tok", now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(p, "POST", "https://broker.example/v1/sessions/abc/credential", "tok", now.Add(2*time.Second), time.Minute)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if v.Thumbprint != Thumbprint(priv.Public().(ed25519.PublicKey)) {
		t.Errorf("thumbprint %s is not the signer's", v.Thumbprint)
	}
	if v.JTI == "" || v.IssuedAt.Unix() != now.Unix() {
		t.Errorf("verified %+v", v)
	}
	p2, _ := NewProof(priv, "POST", "https://broker.example/v1/sessions/abc/credential", "tok", now)
	v2, err := Verify(p2, "POST", "https://broker.example/v1/sessions/abc/credential", "tok", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if v2.JTI == v.JTI {
		t.Error("two proofs share a jti")
	}
	// No access token: no ath, and Verify without a token accepts it.
	p3, _ := NewProof(priv, "GET", "http://127.0.0.1:8080/x", "", now)
	if _, err := Verify(p3, "GET", "http://127.0.0.1:8080/x", "", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(p3, "GET", "http://127.0.0.1:8080/x", "tok", now, time.Minute); err == nil {
		t.Fatal("a proof without ath verified for an access token")
	}
}

// resign builds a proof from explicit parts, to make tampered proofs that
// are still validly signed.
func resign(t *testing.T, key ed25519.PrivateKey, alg jose.SignatureAlgorithm, typ string, embed bool, c map[string]any) string {
	t.Helper()
	b, _ := json.Marshal(c)
	opts := &jose.SignerOptions{EmbedJWK: embed}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifyRejects(t *testing.T) {
	priv := newKey(t)
	other := newKey(t)
	now := time.Unix(1_800_000_000, 0)
	const (
		uri = "https://broker.example/v1/sessions/s1"
		tok = "session-token"
	)
	good, err := NewProof(priv, "GET", uri, tok, now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	base := func() map[string]any {
		return map[string]any{"jti": "j1", "htm": "GET", "htu": uri, "iat": now.Unix(), "ath": AccessTokenHash(tok)}
	}
	with := func(k string, v any) map[string]any {
		m := base()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	// A proof whose jwk header is another key than the one that signed it.
	foreign := func() string {
		otherProof, _ := NewProof(other, "GET", uri, tok, now)
		op := strings.Split(otherProof, ".")
		return op[0] + "." + parts[1] + "." + parts[2]
	}()
	// Payload swapped under a valid signature.
	swapped := func() string {
		p := base()
		p["htm"] = "DELETE"
		b, _ := json.Marshal(p)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}()
	hmacKey := make([]byte, 32)
	cases := []struct {
		name, proof, method, uri, tok string
		now                           time.Time
	}{
		{"garbage", "not.a.jwt", "GET", uri, tok, now},
		{"empty", "", "GET", uri, tok, now},
		{"wrong method", good, "POST", uri, tok, now},
		{"wrong uri path", good, "GET", uri + "/credential", tok, now},
		{"wrong host", good, "GET", "https://evil.example/v1/sessions/s1", tok, now},
		{"wrong scheme", good, "GET", "http://broker.example/v1/sessions/s1", tok, now},
		{"wrong access token", good, "GET", uri, "other-token", now},
		{"too old", good, "GET", uri, tok, now.Add(2 * time.Minute)},
		{"from the future", good, "GET", uri, tok, now.Add(-time.Minute)},
		{"payload swapped", swapped, "GET", uri, tok, now},
		{"foreign jwk", foreign, "GET", uri, tok, now},
		{"signature cut", parts[0] + "." + parts[1] + ".", "GET", uri, tok, now},
		{"typ jwt", resign(t, priv, jose.EdDSA, "JWT", true, base()), "GET", uri, tok, now},
		{"no typ", resign(t, priv, jose.EdDSA, "", true, base()), "GET", uri, tok, now},
		{"no jwk", resign(t, priv, jose.EdDSA, Type, false, base()), "GET", uri, tok, now},
		{"HS256", func() string {
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: hmacKey}, (&jose.SignerOptions{}).WithType(Type))
			b, _ := json.Marshal(base())
			j, _ := s.Sign(b)
			c, _ := j.CompactSerialize()
			return c
		}(), "GET", uri, tok, now},
		{"no jti", resign(t, priv, jose.EdDSA, Type, true, with("jti", nil)), "GET", uri, tok, now},
		{"no iat", resign(t, priv, jose.EdDSA, Type, true, with("iat", nil)), "GET", uri, tok, now},
		{"no ath", resign(t, priv, jose.EdDSA, Type, true, with("ath", nil)), "GET", uri, tok, now},
		{"lowercase htm", resign(t, priv, jose.EdDSA, Type, true, with("htm", "get")), "GET", uri, tok, now},
		{"relative htu", resign(t, priv, jose.EdDSA, Type, true, with("htu", "/v1/sessions/s1")), "GET", uri, tok, now},
		{"iat as string", resign(t, priv, jose.EdDSA, Type, true, with("iat", "1800000000")), "GET", uri, tok, now},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if v, err := Verify(tc.proof, tc.method, tc.uri, tc.tok, tc.now, time.Minute); err == nil {
				t.Fatalf("tampered proof verified: %+v", v)
			}
		})
	}
	// The base claims, properly signed, do verify: the table's failures come
	// from the tampering, not from the helper.
	if _, err := Verify(resign(t, priv, jose.EdDSA, Type, true, base()), "GET", uri, tok, now, time.Minute); err != nil {
		t.Fatalf("control proof: %v", err)
	}
}

func TestNormalizeURI(t *testing.T) {
	for in, want := range map[string]string{
		"https://A.example:443/p?q=1#f": "https://a.example/p",
		"HTTP://a.example:80":           "http://a.example/",
		"http://a.example:8080/x/":      "http://a.example:8080/x/",
		"https://u:p@[::1]:8443/a%2Fb":  "https://[::1]:8443/a%2Fb",
	} {
		got, err := NormalizeURI(in)
		if err != nil || got != want {
			t.Errorf("NormalizeURI(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/relative", "ftp://x/", "https:///nohost", "%zz"} {
		if _, err := NormalizeURI(bad); err == nil {
			t.Errorf("NormalizeURI(%q) accepted", bad)
		}
	}
}

func FuzzVerify(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	good, _ := NewProof(priv, "GET", "https://b.example/x", "t", now)
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, proof string) {
		v, err := Verify(proof, "GET", "https://b.example/x", "t", now, time.Minute)
		if err == nil && (v == nil || v.Thumbprint == "" || v.JTI == "") {
			t.Fatalf("accepted without identity: %+v", v)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	priv := newKey(b)
	now := time.Now()
	p, _ := NewProof(priv, "POST", "https://b.example/v1/token", "t", now)
	for b.Loop() {
		if _, err := Verify(p, "POST", "https://b.example/v1/token", "t", now, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
