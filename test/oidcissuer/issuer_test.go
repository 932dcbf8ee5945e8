package oidcissuer

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
)

// The stand-in is a real OIDC issuer to go-oidc: discovery, keys, tokens; and
// its /token endpoint speaks GitHub's ACTIONS_ID_TOKEN_REQUEST_URL protocol.
func TestIssuer(t *testing.T) {
	i, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close()
	i.RequestToken = "secret"
	ctx := context.Background()
	p, err := oidc.NewProvider(ctx, i.URL)
	if err != nil {
		t.Fatal(err)
	}
	v := p.Verifier(&oidc.Config{ClientID: "aud-1", SupportedSigningAlgs: []string{"RS256", "ES256"}})
	for _, tok := range []string{i.Mint(i.GitHubClaims("acme/app", "1", "aud-1")), i.MintES256(i.GitHubClaims("acme/app", "1", "aud-1"))} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Errorf("verify: %v", err)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, i.URL+"/token?audience=aud-1&run_id=42", nil)
	req.Header.Set("Authorization", "Bearer secret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Value string }
	_ = json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	idt, err := v.Verify(ctx, body.Value)
	if err != nil {
		t.Fatalf("token from /token: %v", err)
	}
	var c struct {
		RunID string `json:"run_id"`
	}
	if err := idt.Claims(&c); err != nil || c.RunID != "42" {
		t.Errorf("run_id = %q, %v", c.RunID, err)
	}
	req.Header.Set("Authorization", "Bearer wrong")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong request token: %d", res.StatusCode)
	}
}
