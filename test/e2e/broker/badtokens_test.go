package broker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/broker/store"
)

// Each bad token is refused with its own error, naming what failed, and
// creates no session and no cluster object.
func TestBadTokens(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	ctx := context.Background()
	iss := e.iss
	good := func() map[string]any { return iss.GitHubClaims("acme/app", "900", audience) }
	with := func(mod func(map[string]any)) map[string]any {
		c := good()
		mod(c)
		return c
	}
	now := time.Now()
	tamperSig := func(tok string) string {
		i := strings.LastIndexByte(tok, '.')
		sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
		sig[len(sig)/2] ^= 0x01
		return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
	}
	tamperPayload := func(tok string) string {
		parts := strings.Split(tok, ".")
		p, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var m map[string]any
		_ = json.Unmarshal(p, &m)
		m["repository"] = "acme/other"
		p, _ = json.Marshal(m)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
	}

	// The replay case: the token works once with its first key.
	replayed := iss.Mint(iss.GitHubClaims("acme/app", "901", audience))
	first := newRunner(t, b.URL)
	if _, err := first.exchange(ctx, replayed); err != nil {
		t.Fatalf("first use of the replayed token: %v", err)
	}
	baseline := countSessions(t, b.Store)

	cases := []struct {
		name  string
		token string
		code  string
		desc  string // a substring of error_description
	}{
		{"expired", iss.Mint(with(func(c map[string]any) {
			c["exp"], c["iat"], c["nbf"] = now.Add(-time.Minute).Unix(), now.Add(-11*time.Minute).Unix(), now.Add(-11*time.Minute).Unix()
		})), "invalid_grant", "expired at"},
		{"not yet valid", iss.Mint(with(func(c map[string]any) {
			c["nbf"], c["exp"] = now.Add(10*time.Minute).Unix(), now.Add(20*time.Minute).Unix()
		})), "invalid_grant", "not valid before"},
		{"issued in the future", iss.Mint(with(func(c map[string]any) { c["iat"] = now.Add(10 * time.Minute).Unix() })), "invalid_grant", "issued in the future"},
		{"unknown issuer", iss.Mint(with(func(c map[string]any) { c["iss"] = "https://token.evil.example" })), "invalid_grant", `issuer "https://token.evil.example" is not trusted`},
		{"wrong audience", iss.Mint(with(func(c map[string]any) { c["aud"] = "https://someone-else" })), "invalid_grant", "audience \"https://someone-else\" is not accepted"},
		{"alg none", iss.Sign("none", iss.RSAKeyID(), good()), "invalid_grant", `algorithm "none" is never accepted`},
		{"HS256 keyed with the public key", iss.Sign("HS256", iss.RSAKeyID(), good()), "invalid_grant", `algorithm "HS256" is never accepted`},
		{"unknown kid", iss.Sign("RS256", "no-such-kid", good()), "invalid_grant", `no key with kid "no-such-kid"`},
		{"tampered signature", tamperSig(iss.Mint(good())), "invalid_grant", "signature does not verify"},
		{"tampered payload", tamperPayload(iss.Mint(good())), "invalid_grant", "signature does not verify"},
		{"oversized", iss.Mint(with(func(c map[string]any) { c["pad"] = strings.Repeat("x", 17<<10) })), "invalid_request", "the limit is 16384"},
		{"malformed", "not-a-jwt", "invalid_grant", "not a JWT"},
		{"malformed base64", "a.b.c", "invalid_grant", "not unpadded base64url"},
		{"no matching trust rule", iss.Mint(with(func(c map[string]any) { c["ref"] = "refs/heads/feature" })), "unauthorized_client", `rule "deploy-main": claim "ref" ("refs/heads/feature") does not match`},
		{"other repository", iss.Mint(iss.GitHubClaims("evil/app", "902", audience)), "unauthorized_client", `claim "repository" ("evil/app") does not match`},
		{"missing run claim", iss.Mint(with(func(c map[string]any) { delete(c, "run_id") })), "invalid_grant", `no "run_id" claim`},
		{"jti replayed with another session key", replayed, "invalid_grant", "already exchanged with a different session key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(t, b.URL)
			_, err := r.exchange(ctx, tc.token)
			ae := apiError(err)
			if ae == nil {
				t.Fatalf("exchange: err = %v, want %s", err, tc.code)
			}
			if ae.Code != tc.code || !strings.Contains(ae.Description, tc.desc) {
				t.Errorf("error = %s: %q\nwant %s containing %q", ae.Code, ae.Description, tc.code, tc.desc)
			}
			if tc.name != "malformed" && len(tc.token) > 100 && strings.Contains(ae.Description, tc.token[len(tc.token)-40:]) {
				t.Errorf("the description echoes the token")
			}
			if n := countSessions(t, b.Store); n != baseline {
				t.Errorf("sessions = %d after a refused exchange, want %d", n, baseline)
			}
		})
	}
	// Only the one good exchange made cluster objects.
	sas, err := e.c.Clientset().CoreV1().ServiceAccounts(e.brokerNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sas.Items) != 1+1 { // the namespace's default SA and the replayed token's session
		names := []string{}
		for _, s := range sas.Items {
			names = append(names, s.Name)
		}
		t.Errorf("ServiceAccounts in the broker namespace: %v, want default and one session", names)
	}
}

// Malformed requests get invalid_request (or unsupported_grant_type) with a
// description that says what to fix.
func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	b := e.startBroker(t, e.storeURL, nil)
	key := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	tok := e.iss.Mint(e.iss.GitHubClaims("acme/app", "950", audience))
	form := func(mod func(url.Values)) url.Values {
		v := url.Values{"grant_type": {api.GrantTypeTokenExchange}, "subject_token": {tok},
			"subject_token_type": {api.TokenTypeIDToken}, "audience": {"test"}, api.FormSessionKey: {key}}
		mod(v)
		return v
	}
	cases := []struct {
		name string
		body url.Values
		code string
		desc string
	}{
		{"wrong grant type", form(func(v url.Values) { v.Set("grant_type", "password") }), "unsupported_grant_type", "grant_type must be"},
		{"no session key", form(func(v url.Values) { v.Del(api.FormSessionKey) }), "invalid_request", "session_key field is missing"},
		{"short session key", form(func(v url.Values) { v.Set(api.FormSessionKey, "AAAA") }), "invalid_request", "32-byte ed25519"},
		{"repeated field", form(func(v url.Values) { v.Add("audience", "other") }), "invalid_request", "appears 2 times"},
		{"unknown cluster", form(func(v url.Values) { v.Set("audience", "prod") }), "invalid_target", `no cluster "prod"`},
		{"wrong token type", form(func(v url.Values) { v.Set("subject_token_type", api.TokenTypeAccessToken) }), "invalid_request", "subject_token_type must be"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := http.PostForm(b.URL+api.PathToken, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var ae api.Error
			if err := json.NewDecoder(res.Body).Decode(&ae); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode/100 != 4 || ae.Code != tc.code || !strings.Contains(ae.Description, tc.desc) {
				t.Errorf("= %d %s %q; want 4xx %s containing %q", res.StatusCode, ae.Code, ae.Description, tc.code, tc.desc)
			}
		})
	}
	// A body over the limit.
	big := strings.NewReader("subject_token=" + strings.Repeat("a", 70<<10))
	res, err := http.Post(b.URL+api.PathToken, "application/x-www-form-urlencoded", big)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("oversized body: %d, want 400", res.StatusCode)
	}
}

func countSessions(t *testing.T, st store.Store) int {
	t.Helper()
	ss, err := st.ListSessions(context.Background(), store.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(ss)
}
