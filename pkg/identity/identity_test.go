package identity

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// actionsServer speaks the GitHub Actions ID token protocol.
func actionsServer(t *testing.T, bearer string, calls *atomic.Int32) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+bearer {
			http.Error(w, `{"message":"bad bearer"}`, http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("api-version") != "2.0" {
			http.Error(w, "missing api-version", http.StatusBadRequest)
			return
		}
		aud := r.URL.Query().Get("audience")
		if aud == "" {
			http.Error(w, "missing audience", http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"value": jwt(map[string]any{
			"iss": "https://token.actions.githubusercontent.com", "aud": aud, "exp": 2_000_000_000,
			"repository": "o/r", "run_id": "42", "run_attempt": "1",
		})})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestGitHub(t *testing.T) {
	var calls atomic.Int32
	srv := actionsServer(t, "req-token", &calls)
	env := envOf(map[string]string{
		"GITHUB_ACTIONS":                 "true",
		"ACTIONS_ID_TOKEN_REQUEST_URL":   srv.URL + "/token?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "req-token",
	})
	for _, spec := range []string{"github", "auto", ""} {
		ts, err := New(spec, "https://broker.example/a b&c", env)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := ts.Token()
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		c, err := decodeClaims(tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		if c.Iss != "https://token.actions.githubusercontent.com" || !tok.Expiry.Equal(time.Unix(2_000_000_000, 0)) {
			t.Errorf("%s: token %+v", spec, c)
		}
		// The audience reached the server intact (escaped, not split at &).
		var full map[string]any
		b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.AccessToken, ".")[1])
		_ = json.Unmarshal(b, &full)
		if full["aud"] != "https://broker.example/a b&c" {
			t.Errorf("audience arrived as %v", full["aud"])
		}
	}
	// Lazy: every Token call fetches, New fetches nothing.
	before := calls.Load()
	ts, _ := New("github", "x", env)
	if calls.Load() != before {
		t.Fatal("New fetched a token")
	}
	_, _ = ts.Token()
	_, _ = ts.Token()
	if calls.Load() != before+2 {
		t.Fatalf("two Token calls made %d requests", calls.Load()-before)
	}
	// A wrong bearer: a clear error, and no retry of a 4xx.
	bad := envOf(map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": srv.URL + "/token?api-version=2.0", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "wrong"})
	ts, _ = New("github", "x", bad)
	before = calls.Load()
	if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("wrong bearer: %v", err)
	}
	if calls.Load() != before+1 {
		t.Fatalf("a 401 was retried")
	}
}

func TestGitHubWithoutPermission(t *testing.T) {
	for _, spec := range []string{"github", "auto"} {
		_, err := New(spec, "aud", envOf(map[string]string{"GITHUB_ACTIONS": "true"}))
		if err == nil || !strings.Contains(err.Error(), "permissions: id-token: write") {
			t.Fatalf("%s: %v", spec, err)
		}
	}
}

func TestEnvSources(t *testing.T) {
	tok := jwt(map[string]any{"iss": "https://gitlab.example", "project_path": "g/p", "pipeline_id": 7})
	cases := []struct {
		spec string
		env  map[string]string
	}{
		{"gitlab", map[string]string{"KUBECTL_AGENT_ID_TOKEN": tok, "GITLAB_OIDC_TOKEN": "other"}},
		{"gitlab", map[string]string{"GITLAB_OIDC_TOKEN": tok}},
		{"gitlab:MY_TOKEN", map[string]string{"MY_TOKEN": tok, "KUBECTL_AGENT_ID_TOKEN": "other"}},
		{"auto", map[string]string{"GITLAB_CI": "true", "KUBECTL_AGENT_ID_TOKEN": tok}},
		{"circleci", map[string]string{"CIRCLE_OIDC_TOKEN_V2": tok, "CIRCLE_OIDC_TOKEN": "v1"}},
		{"auto", map[string]string{"CIRCLECI": "true", "CIRCLE_OIDC_TOKEN_V2": tok}},
		{"env:X", map[string]string{"X": "  " + tok + "\n"}},
	}
	for _, tc := range cases {
		ts, err := New(tc.spec, "aud", envOf(tc.env))
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		got, err := ts.Token()
		if err != nil || got.AccessToken != tok {
			t.Fatalf("%s %v: got %v, %v", tc.spec, tc.env, got, err)
		}
	}
	// Missing variables say what to set.
	for spec, want := range map[string]string{
		"gitlab":   "id_tokens",
		"gitlab:V": "V is not set",
		"circleci": "context",
		"env:NOPE": "set NOPE",
	} {
		ts, err := New(spec, "aud", envOf(nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v does not say %q", spec, err, want)
		}
	}
}

func TestFileRotates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	ts, err := New("file:"+p, "", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(); err == nil {
		t.Fatal("a missing file gave a token")
	}
	for _, v := range []string{"first", "second"} {
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ts.Token()
		if err != nil || got.AccessToken != v {
			t.Fatalf("got %v, %v; want %s", got, err, v)
		}
	}
	_ = os.WriteFile(p, nil, 0o600)
	if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
}

func TestCommand(t *testing.T) {
	ts, _ := New("command:printf ' tok-%s\\n' abc", "", envOf(nil))
	got, err := ts.Token()
	if err != nil || got.AccessToken != "tok-abc" {
		t.Fatalf("got %v, %v", got, err)
	}
	ts, _ = New("command:echo oops >&2; exit 3", "", envOf(nil))
	if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("failing command: %v", err)
	}
	ts, _ = New("command:true", "", envOf(nil))
	if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "printed nothing") {
		t.Fatalf("silent command: %v", err)
	}
}

func TestBuildkite(t *testing.T) {
	// A stand-in buildkite-agent on PATH that checks its arguments.
	dir := t.TempDir()
	script := "#!/bin/sh\n[ \"$1 $2 $3 $4\" = 'oidc request-token --audience aud-1' ] || { echo \"bad args: $*\" >&2; exit 1; }\necho bk-token\n"
	if err := os.WriteFile(filepath.Join(dir, "buildkite-agent"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	ts, err := New("auto", "aud-1", envOf(map[string]string{"BUILDKITE": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ts.Token()
	if err != nil || got.AccessToken != "bk-token" {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestBadSpecs(t *testing.T) {
	_, err := New("auto", "", envOf(nil))
	if err == nil {
		t.Fatal("auto found something in an empty environment")
	}
	for _, want := range []string{"GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "BUILDKITE", "env:VAR", "KUBECTL_AGENT_TOKEN_SOURCE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("auto error %q does not mention %s", err, want)
		}
	}
	for _, spec := range []string{"nope", "env:", "file:", "command:  ", "gitlab:"} {
		if _, err := New(spec, "", envOf(nil)); err == nil {
			t.Errorf("spec %q accepted", spec)
		}
	}
}

func TestRunKey(t *testing.T) {
	cases := []struct {
		claims map[string]any
		want   Run
	}{
		{map[string]any{"iss": "gh", "sub": "repo:o/r", "repository": "o/r", "run_id": "42", "run_attempt": "2"}, Run{"gh", "repo:o/r", "o/r", "42", "2"}},
		{map[string]any{"iss": "gl", "project_path": "g/p", "pipeline_id": "9"}, Run{Issuer: "gl", Repository: "g/p", RunID: "9"}},
		{map[string]any{"iss": "bk", "organization_slug": "o", "pipeline_slug": "p", "build_number": 12}, Run{Issuer: "bk", Repository: "o/p", RunID: "12"}},
		{map[string]any{"iss": "cc", "oidc.circleci.com/project-id": "p", "oidc.circleci.com/workflow-id": "w"}, Run{Issuer: "cc", Repository: "p", RunID: "w"}},
		{map[string]any{"iss": "x", "sub": "s"}, Run{Issuer: "x", Subject: "s"}},
	}
	for _, tc := range cases {
		got, err := RunKey(jwt(tc.claims))
		if err != nil || got != tc.want {
			t.Errorf("RunKey(%v) = %+v, %v; want %+v", tc.claims, got, err, tc.want)
		}
	}
	if (Run{Issuer: "x"}).Complete() {
		t.Error("a run without id is complete")
	}
	for _, bad := range []string{"", "abc", "a.b", "a.!!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c", jwt(map[string]any{"sub": "no issuer"})} {
		if _, err := RunKey(bad); err == nil {
			t.Errorf("RunKey(%q) accepted", bad)
		}
	}
}

func TestEnvRun(t *testing.T) {
	gh := map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "1", "GITHUB_RUN_ATTEMPT": "1"}
	if r := EnvRun(envOf(gh)); r["GITHUB_RUN_ID"] != "1" || r["ci"] != "github" {
		t.Fatalf("EnvRun = %v", r)
	}
	delete(gh, "GITHUB_RUN_ATTEMPT")
	if r := EnvRun(envOf(gh)); r != nil {
		t.Fatalf("an incomplete environment gave %v", r)
	}
	if r := EnvRun(envOf(nil)); r != nil {
		t.Fatalf("no CI gave %v", r)
	}
}

func FuzzRunKey(f *testing.F) {
	f.Add(jwt(map[string]any{"iss": "gh", "run_id": 1}))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("x." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"i","run_id":{"a":[1]}}`)) + ".")
	f.Fuzz(func(t *testing.T, tok string) {
		r, err := RunKey(tok)
		if err == nil && r.Issuer == "" {
			t.Fatal("accepted a token without issuer")
		}
	})
}

func BenchmarkRunKey(b *testing.B) {
	tok := jwt(map[string]any{"iss": "https://token.actions.githubusercontent.com", "repository": "o/r", "run_id": "42", "run_attempt": "1", "sub": strings.Repeat("x", 200)})
	for b.Loop() {
		if _, err := RunKey(tok); err != nil {
			b.Fatal(err)
		}
	}
}
