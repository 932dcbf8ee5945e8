package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-agent/kubectl-agent/pkg/credential"
	"github.com/kubectl-agent/kubectl-agent/pkg/session/sessiontest"
)

// runAgent runs kubectl-agent's root command in-process.
func runAgent(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(context.Background(), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return out.String(), errOut.String(), code
}

func fakeRunJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

// cleanEnv clears what would make the tests depend on the machine (a CI
// runner running these tests is itself GitHub Actions).
func cleanEnv(t *testing.T) string {
	t.Helper()
	for _, k := range []string{envBroker, envCluster, envTokenSource, envAudience, credential.ExecInfoEnv,
		"GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "BUILDKITE", "RUNNER_TEMP", "ACTIONS_ID_TOKEN_REQUEST_URL"} {
		t.Setenv(k, "")
	}
	dir := filepath.Join(t.TempDir(), "cache")
	t.Setenv("KUBECACHEDIR", dir)
	return filepath.Join(dir, "kubectl-agent")
}

func TestCredentialNeedsSettings(t *testing.T) {
	cleanEnv(t)
	_, stderr, code := runAgent(t, "credential")
	if code != ExitUsage || !strings.Contains(stderr, "--broker (or KUBECTL_AGENT_BROKER) and --cluster (or KUBECTL_AGENT_CLUSTER)") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
	// No CI system and no --token-source: fails at once, saying what to set.
	_, stderr, code = runAgent(t, "credential", "--broker", "http://127.0.0.1:1", "--cluster", "c1")
	if code != ExitFailure || !strings.Contains(stderr, "GITHUB_ACTIONS") || !strings.Contains(stderr, "--token-source") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
	t.Setenv("GITHUB_ACTIONS", "true")
	_, stderr, _ = runAgent(t, "credential", "--broker", "http://127.0.0.1:1", "--cluster", "c1")
	if !strings.Contains(stderr, "id-token: write") {
		t.Fatalf("stderr %q", stderr)
	}
}

func TestCredentialFlow(t *testing.T) {
	cacheDir := cleanEnv(t)
	b := sessiontest.New(t)
	t.Setenv("TOK", fakeRunJWT(map[string]any{"iss": "https://gitlab.example", "project_path": "g/p", "pipeline_id": "7"}))
	t.Setenv(envTokenSource, "env:TOK")
	// Broker and cluster come from the kubeconfig extension, as kubectl
	// passes them with provideClusterInfo.
	info, _ := json.Marshal(map[string]any{
		"apiVersion": credential.V1beta1, "kind": "ExecCredential",
		"spec": map[string]any{"interactive": false, "cluster": map[string]any{"server": "https://c1.example",
			"config": map[string]string{"broker": b.URL, "cluster": "c1"}}},
	})
	t.Setenv(credential.ExecInfoEnv, string(info))
	stdout, stderr, code := runAgent(t, "credential")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	var ec credential.ExecCredential
	if err := json.Unmarshal([]byte(stdout), &ec); err != nil {
		t.Fatalf("output %q: %v", stdout, err)
	}
	if ec.APIVersion != credential.V1beta1 || ec.Status.Token != "cluster-1-0" || ec.Status.ExpirationTimestamp == nil ||
		time.Until(*ec.Status.ExpirationTimestamp) > 59*time.Minute+5*time.Second {
		t.Fatalf("ExecCredential %s", stdout)
	}
	// The cache is private.
	fi, err := os.Stat(cacheDir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v %v", fi, err)
	}
	// Broker down: a cache hit needs no network.
	b.Close()
	t.Setenv(credential.ExecInfoEnv, "")
	stdout, stderr, code = runAgent(t, "credential", "--broker", b.URL, "--cluster", "c1")
	if code != 0 || !strings.Contains(stdout, `"apiVersion":"client.authentication.k8s.io/v1"`) || !strings.Contains(stdout, "cluster-1-0") {
		t.Fatalf("cache hit: code %d, %s %s", code, stdout, stderr)
	}
	if b.Exchanges.Load() != 1 {
		t.Fatalf("%d exchanges", b.Exchanges.Load())
	}
	// Another run, broker down: one line, non-zero.
	t.Setenv("TOK", fakeRunJWT(map[string]any{"iss": "https://gitlab.example", "project_path": "g/p", "pipeline_id": "8"}))
	_, stderr, code = runAgent(t, "credential", "--broker", b.URL, "--cluster", "c1")
	if code != ExitFailure || !strings.Contains(stderr, "cannot reach the broker") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("broker down: code %d, %q", code, stderr)
	}
	// A damaged cache file: one line naming it, non-zero.
	var entries []string
	all, _ := filepath.Glob(filepath.Join(cacheDir, "*.json"))
	for _, e := range all {
		if !strings.HasPrefix(filepath.Base(e), "key-") { // the runs' session keys
			entries = append(entries, e)
		}
	}
	if len(entries) != 1 {
		t.Fatalf("cache files %v", entries)
	}
	_ = os.WriteFile(entries[0], []byte("garbage"), 0o600)
	t.Setenv("TOK", fakeRunJWT(map[string]any{"iss": "https://gitlab.example", "project_path": "g/p", "pipeline_id": "7"}))
	_, stderr, code = runAgent(t, "credential", "--broker", b.URL, "--cluster", "c1")
	if code != ExitFailure || !strings.Contains(stderr, entries[0]) || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("damaged cache: code %d, %q", code, stderr)
	}
}

func TestCredentialRefused(t *testing.T) {
	cleanEnv(t)
	b := sessiontest.New(t)
	t.Setenv("TOK", "refuse."+base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"x","run_id":"1"}`))+".sig")
	_, stderr, code := runAgent(t, "credential", "--broker", b.URL, "--cluster", "c1", "--token-source", "env:TOK")
	if code != ExitFailure || !strings.Contains(stderr, "invalid_grant: no trust rule matches repository o/evil") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("code %d, %q", code, stderr)
	}
}

func TestKubeconfigWhoamiLogout(t *testing.T) {
	cleanEnv(t)
	b := sessiontest.New(t)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	// An existing config is merged, not replaced.
	_ = os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: old, cluster: {server: "https://old.example"}}]
users: [{name: old, user: {token: x}}]
contexts: [{name: old, context: {cluster: old, user: old}}]
current-context: old
`), 0o644)
	stdout, stderr, code := runAgent(t, "kubeconfig", "--broker", b.URL+"/", "--cluster", "c1", "--kubeconfig", kc, "--token-source", "env:TOK")
	if code != 0 {
		t.Fatalf("kubeconfig: %d %s", code, stderr)
	}
	if !strings.Contains(stdout, `"agent-c1"`) {
		t.Fatalf("stdout %q", stdout)
	}
	if fi, _ := os.Stat(kc); fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig mode %o", fi.Mode().Perm())
	}
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CurrentContext != "agent-c1" || cfg.Contexts["old"] == nil || cfg.Clusters["agent-c1"].Server != "https://c1.example" {
		t.Fatalf("merged config %+v", cfg)
	}
	ex := cfg.AuthInfos["agent-c1"].Exec
	if ex == nil || ex.Command != "kubectl-agent" || !slices.Equal(ex.Args, []string{"credential"}) || ex.APIVersion != credential.V1 ||
		!ex.ProvideClusterInfo || ex.InteractiveMode != "Never" || !strings.Contains(ex.InstallHint, "krew") {
		t.Fatalf("exec %+v", ex)
	}
	raw, _ := os.ReadFile(kc)
	for _, want := range []string{"name: " + credential.ExtensionName, "broker: " + b.URL + "\n", "cluster: c1", "tokenSource: env:TOK"} {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("kubeconfig lacks %q:\n%s", want, raw)
		}
	}
	// An unknown cluster says which exist.
	_, stderr, code = runAgent(t, "kubeconfig", "--broker", b.URL, "--cluster", "nope", "--kubeconfig", kc)
	if code != ExitUsage || !strings.Contains(stderr, "it has: c1") {
		t.Fatalf("unknown cluster: %d %q", code, stderr)
	}

	t.Setenv("TOK", fakeRunJWT(map[string]any{"iss": "https://token.actions.githubusercontent.com", "repository": "o/r", "run_id": "42", "run_attempt": "1"}))
	args := []string{"--broker", b.URL, "--cluster", "c1", "--token-source", "env:TOK"}
	stdout, stderr, code = runAgent(t, append([]string{"whoami", "-o", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("whoami: %d %s", code, stderr)
	}
	var w WhoAmI
	if err := json.Unmarshal([]byte(stdout), &w); err != nil || w.Session.ID != "s1" || w.Session.Credential != nil || w.TimeLeft == "" {
		t.Fatalf("whoami json %s: %v", stdout, err)
	}
	stdout, _, code = runAgent(t, append([]string{"whoami"}, args...)...)
	if code != 0 || !strings.Contains(stdout, "SESSION") || !strings.Contains(stdout, "namespaces ns") || strings.Contains(stdout, "cluster-1-0") {
		t.Fatalf("whoami table %q", stdout)
	}
	stdout, stderr, code = runAgent(t, append([]string{"logout"}, args...)...)
	if code != 0 || !strings.Contains(stdout, "Ended session s1") {
		t.Fatalf("logout: %d %q %q", code, stdout, stderr)
	}
	stdout, _, code = runAgent(t, append([]string{"logout"}, args...)...)
	if code != 0 || !strings.Contains(stdout, "No session to end") {
		t.Fatalf("second logout: %d %q", code, stdout)
	}
	// After logout a new session starts.
	stdout, _, _ = runAgent(t, append([]string{"whoami", "-o", "yaml"}, args...)...)
	if !strings.Contains(stdout, "id: s2") {
		t.Fatalf("after logout: %s", stdout)
	}
}

// BenchmarkCredentialCacheHitProcess measures what every kubectl call pays:
// one whole kubectl-agent credential process answered from the cache.
func BenchmarkCredentialCacheHitProcess(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "kubectl-agent")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/kubectl-agent")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building kubectl-agent: %v\n%s", err, out)
	}
	br := sessiontest.New(b)
	env := append(os.Environ(),
		"KUBECACHEDIR="+filepath.Join(b.TempDir(), "cache"),
		"TOK="+fakeRunJWT(map[string]any{"iss": "https://token.actions.githubusercontent.com", "repository": "o/r", "run_id": "42", "run_attempt": "1"}),
		"GITHUB_ACTIONS=true", "GITHUB_SERVER_URL=https://github.com", "GITHUB_REPOSITORY=o/r", "GITHUB_RUN_ID=42", "GITHUB_RUN_ATTEMPT=1",
		"ACTIONS_ID_TOKEN_REQUEST_URL=http://127.0.0.1:1/unused", "ACTIONS_ID_TOKEN_REQUEST_TOKEN=unused",
		envBroker+"="+br.URL, envCluster+"=c1", envTokenSource+"=env:TOK")
	run := func() (time.Duration, int64) {
		cmd := exec.Command(bin, "credential")
		cmd.Env = env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil || !bytes.Contains(out, []byte("cluster-1-0")) {
			b.Fatalf("credential: %v %s", err, out)
		}
		ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		if ru == nil {
			return d, 0
		}
		return d, ru.Maxrss // KiB on Linux
	}
	run() // the exchange; the rest are cache hits
	var durs []time.Duration
	var peak int64
	for b.Loop() {
		d, rss := run()
		durs = append(durs, d)
		peak = max(peak, rss)
	}
	if br.Exchanges.Load() != 1 {
		b.Fatalf("%d exchanges", br.Exchanges.Load())
	}
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(peak)/1024, "MiB-peak")
}
