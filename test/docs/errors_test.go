package docs

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"k8s.io/client-go/tools/clientcmd"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The troubleshooting page lists every message the tools print, one heading
// per message, written as a code span with "…" where the message varies:
//
//	### `the token expired at …; get a fresh one from the CI system`
//
// TestTroubleshootingMessagesExist checks that the code still says each of
// them, so a reworded message fails here and the page gets updated with it.
// Headings that are not a single code span (kubectl's own messages, section
// titles) are not checked.

var codeHeading = regexp.MustCompile("(?m)^#{2,4} `([^`]+)`\\s*$")

// placeholder is how the page marks the varying parts of a message. A quoted
// placeholder stands for a %q verb, whose quotes are not in the format string.
var placeholder = strings.NewReplacer(`"…"`, "…", `'…'`, "…")

// minAnchor is the length of the longest fragment a checked heading must
// have: short fragments ("policy", ": ") are found anywhere and prove nothing.
const minAnchor = 10

func TestTroubleshootingMessagesExist(t *testing.T) {
	lits := stringLiterals(t, "../../pkg", "../../cmd")
	page, err := os.ReadFile("../../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	headings := codeHeading.FindAllSubmatch(page, -1)
	if len(headings) < 150 {
		t.Fatalf("docs/troubleshooting.md has %d message headings; expected the whole list (150+)", len(headings))
	}
	seen := map[string]bool{}
	for _, h := range headings {
		msg := string(h[1])
		if seen[msg] {
			t.Errorf("message %q is listed twice", msg)
		}
		seen[msg] = true
		longest := 0
		for _, frag := range fragments(msg) {
			longest = max(longest, len(frag))
			if !containsAny(lits, frag) {
				t.Errorf("docs/troubleshooting.md: %q: the code no longer says %q; update the page to the new wording (or drop the entry)", msg, frag)
			}
		}
		if longest < minAnchor {
			t.Errorf("docs/troubleshooting.md: %q: no part of it is %d+ characters long; quote more of the message", msg, minAnchor)
		}
	}
	t.Logf("%d messages checked against %d string literals", len(headings), len(lits))
}

// fragments splits a documented message at its placeholders into the parts
// that must appear verbatim in one string literal each.
func fragments(msg string) []string {
	var out []string
	for _, f := range strings.Split(placeholder.Replace(msg), "…") {
		f = strings.TrimSpace(f)
		if strings.IndexFunc(f, unicode.IsLetter) >= 0 {
			out = append(out, f)
		}
	}
	return out
}

func containsAny(lits []string, s string) bool {
	for _, l := range lits {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// stringLiterals returns the string literals of the non-test Go files under
// dirs, unquoted, plus the concatenation of literals joined with + (a long
// message is often split that way).
func stringLiterals(t *testing.T, dirs ...string) []string {
	t.Helper()
	var out []string
	fset := token.NewFileSet()
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BasicLit:
					if s, ok := literal(n); ok {
						out = append(out, s)
					}
				case *ast.BinaryExpr:
					if s, ok := concat(n); ok {
						out = append(out, s)
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func literal(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func concat(e ast.Expr) (string, bool) {
	if s, ok := literal(e); ok {
		return s, true
	}
	b, ok := e.(*ast.BinaryExpr)
	if !ok || b.Op != token.ADD {
		return "", false
	}
	l, ok1 := concat(b.X)
	r, ok2 := concat(b.Y)
	return l + r, ok1 && ok2
}

func TestFragments(t *testing.T) {
	for msg, want := range map[string][]string{
		"the token expired at …; get a fresh one":       {"the token expired at", "; get a fresh one"},
		`unknown token source "…": use auto`:            {"unknown token source", ": use auto"},
		"no approval …; … shows pending ones":           {"no approval", "shows pending ones"},
		"policy evaluation failed: ":                    {"policy evaluation failed:"},
		`getting … the response has no "value"`:         {"getting", `the response has no "value"`},
		"seal covers transcript digest …, but lines 1-": {"seal covers transcript digest", ", but lines 1-"},
	} {
		if got := fragments(msg); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("fragments(%q) = %q, want %q", msg, got, want)
		}
	}
	lits := []string{"the token expired at %s; get a fresh one from the CI system"}
	if !containsAny(lits, "the token expired at") || containsAny(lits, "the token expired on") {
		t.Error("containsAny does not match substrings of literals")
	}
}

// The kuberc snippet. kubectl 1.35 added credentialPluginPolicy and
// credentialPluginAllowlist to kubectl.config.k8s.io/v1beta1 Preference; the
// k8s.io/kubectl v0.34.4 module this repository pins has the Preference type
// without them (and is not a dependency of the main module), so the fields
// kubectl 1.35 reads are mirrored here and decoded strictly: a misspelled key
// (credentialPluginAllowList) would make kubectl treat the allowlist as
// missing and refuse every plugin.
type kubercPreference struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Defaults   []struct {
		Command string `json:"command"`
		Options []struct {
			Name    string `json:"name"`
			Default string `json:"default"`
		} `json:"options"`
	} `json:"defaults,omitempty"`
	Aliases                   []map[string]any `json:"aliases,omitempty"`
	CredentialPluginPolicy    string           `json:"credentialPluginPolicy,omitempty"`
	CredentialPluginAllowlist []struct {
		Name string `json:"name"`
	} `json:"credentialPluginAllowlist,omitempty"`
}

// allows says whether kubectl 1.35 would run command under this kuberc, by
// the rule documented for kuberc's credentialPluginAllowlist: an entry that
// is a basename matches the command's basename, an absolute path matches
// exactly.
func (p kubercPreference) allows(command string) bool {
	switch p.CredentialPluginPolicy {
	case "", "AllowAll":
		return true
	case "DenyAll":
		return false
	}
	for _, e := range p.CredentialPluginAllowlist {
		if e.Name == "" {
			return false // kubectl treats an empty entry as a configuration error
		}
		if e.Name == command || (!filepath.IsAbs(e.Name) && e.Name == filepath.Base(command)) {
			return true
		}
	}
	return false
}

var fenceAny = regexp.MustCompile("(?s)```(yaml|json)\n(.*?)```")

func TestKubercSnippet(t *testing.T) {
	page, err := os.ReadFile("../../docs/kuberc.md")
	if err != nil {
		t.Fatal(err)
	}
	var prefs []kubercPreference
	for _, m := range fenceAny.FindAllSubmatch(page, -1) {
		body := m[2]
		if !bytes.Contains(body, []byte("kind: Preference")) {
			continue
		}
		// Case-sensitive, as kubectl decodes (encoding/json would take
		// credentialPluginAllowList for credentialPluginAllowlist).
		js, err := yaml.YAMLToJSON(body)
		if err != nil {
			t.Fatalf("kuberc snippet is not YAML: %v", err)
		}
		var p kubercPreference
		strict, err := kjson.UnmarshalStrict(js, &p)
		if err == nil && len(strict) > 0 {
			err = errors.Join(strict...)
		}
		if err != nil {
			t.Fatalf("kuberc snippet does not decode strictly as a kubectl Preference: %v\n%s", err, body)
		}
		if p.APIVersion != "kubectl.config.k8s.io/v1beta1" {
			t.Errorf("kuberc apiVersion is %q; kubectl reads the allowlist from kubectl.config.k8s.io/v1beta1", p.APIVersion)
		}
		switch p.CredentialPluginPolicy {
		case "AllowAll", "DenyAll", "":
		case "Allowlist":
			if len(p.CredentialPluginAllowlist) == 0 {
				t.Errorf("credentialPluginPolicy: Allowlist with an empty allowlist refuses every plugin")
			}
		default:
			t.Errorf("credentialPluginPolicy %q is not AllowAll, DenyAll or Allowlist", p.CredentialPluginPolicy)
		}
		prefs = append(prefs, p)
	}
	if len(prefs) == 0 {
		t.Fatal("docs/kuberc.md shows no kuberc (kind: Preference) snippet")
	}
	if prefs[0].CredentialPluginPolicy != "Allowlist" || !prefs[0].allows("kubectl-agent") {
		t.Fatalf("the first kuberc snippet should be an Allowlist that lets kubectl run kubectl-agent")
	}
	if prefs[0].allows("kubectl") || prefs[0].allows("/tmp/evil") {
		t.Errorf("the first kuberc snippet allows more than kubectl-agent")
	}

	// Every exec entry we ship or document must pass that allowlist,
	// which is why it runs kubectl-agent and not kubectl.
	execs := 0
	for _, s := range snippets(t) {
		if s.lang != "yaml" || !bytes.Contains(s.body, []byte("users:")) {
			continue
		}
		cfg, err := clientcmd.Load(s.body)
		if err != nil {
			continue // not a kubeconfig; TestEverySnippetIsValid judges it
		}
		for name, u := range cfg.AuthInfos {
			if u.Exec == nil {
				continue
			}
			execs++
			if !prefs[0].allows(u.Exec.Command) {
				t.Errorf("%s: user %q runs %q, which the documented kuberc allowlist refuses", s.where, name, u.Exec.Command)
			}
		}
	}
	if execs == 0 {
		t.Error("found no kubeconfig exec entry in the docs and examples to check against the kuberc allowlist")
	}
}

func TestKubercAllows(t *testing.T) {
	p := kubercPreference{CredentialPluginPolicy: "Allowlist"}
	p.CredentialPluginAllowlist = append(p.CredentialPluginAllowlist, struct {
		Name string `json:"name"`
	}{Name: "kubectl-agent"}, struct {
		Name string `json:"name"`
	}{Name: "/opt/bin/other"})
	for cmd, want := range map[string]bool{
		"kubectl-agent":                true,
		"/usr/local/bin/kubectl-agent": true,
		"kubectl":                      false,
		"/opt/bin/other":               true,
		"other":                        false,
	} {
		if got := p.allows(cmd); got != want {
			t.Errorf("allows(%q) = %v, want %v", cmd, got, want)
		}
	}
	if (kubercPreference{CredentialPluginPolicy: "DenyAll"}).allows("kubectl-agent") {
		t.Error("DenyAll allows a plugin")
	}
}

// Links between the pages this suite owns must lead somewhere: the file
// exists and, for #anchors, a heading with that GitHub slug exists.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

func TestDocLinks(t *testing.T) {
	for _, page := range []string{"../../docs/troubleshooting.md", "../../docs/kuberc.md", "../../docs/README.md", "../../README.md"} {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllSubmatch(b, -1) {
			link := string(m[1])
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(link, "#")
			target := page
			if file != "" {
				target = filepath.Join(filepath.Dir(page), file)
			}
			tb, err := os.ReadFile(target)
			if err != nil {
				if _, serr := os.Stat(target); serr == nil {
					continue // a folder
				}
				t.Errorf("%s: link %q: %v", page, link, err)
				continue
			}
			if anchor != "" && !slugs(tb)[anchor] {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", page, link, target, anchor)
			}
		}
	}
}

// TestDocsIndexComplete keeps docs/README.md an index of every page.
func TestDocsIndexComplete(t *testing.T) {
	index, err := os.ReadFile("../../docs/README.md")
	if err != nil {
		t.Fatal(err)
	}
	pages, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		name := filepath.Base(p)
		if name != "README.md" && !bytes.Contains(index, []byte("]("+name+")")) {
			t.Errorf("docs/README.md does not list %s; add a line for it", name)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(docs/README.md)", "(docs/troubleshooting.md)"} {
		if !bytes.Contains(readme, []byte(want)) {
			t.Errorf("README.md does not link %s", want)
		}
	}
}

var mdHeading = regexp.MustCompile("(?m)^#{1,6} (.+)$")

// slugs are the anchors GitHub gives a page's headings: lower case, spaces
// to '-', everything but letters, digits, '-' and '_' dropped.
func slugs(page []byte) map[string]bool {
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(page), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		m := mdHeading.FindStringSubmatch(line)
		if inFence || m == nil {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(m[1])) {
			switch {
			case r == ' ':
				b.WriteByte('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		s := b.String()
		for i := 0; out[s]; i++ {
			s = b.String() + "-" + strconv.Itoa(i+1)
		}
		out[s] = true
	}
	return out
}
