package approvals_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/approval"
)

const chromiumPath = "/usr/bin/chromium"

// browser is headless Chromium with its console watched.
type browser struct {
	ctx context.Context

	mu       sync.Mutex
	problems []string
	dialogs  int
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is needed for the web page test: apt-get install -y chromium (%v)", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	b := &browser{ctx: ctx}
	chromedp.ListenTarget(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeWarning {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value))
				}
				b.problems = append(b.problems, fmt.Sprintf("console.%s: %s", e.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			b.problems = append(b.problems, "exception: "+e.ExceptionDetails.Text)
		case *log.EventEntryAdded:
			if e.Entry.Level == log.LevelError || e.Entry.Level == log.LevelWarning {
				b.problems = append(b.problems, fmt.Sprintf("log %s: %s %s", e.Entry.Level, e.Entry.Text, e.Entry.URL))
			}
		case *page.EventJavascriptDialogOpening:
			b.dialogs++
			go func() { _ = chromedp.Run(ctx, page.HandleJavaScriptDialog(false)) }()
		}
	})
	if err := chromedp.Run(ctx, log.Enable(), runtime.Enable()); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return b
}

func (b *browser) check(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		t.Errorf("the page logged problems in the console:\n%s", strings.Join(b.problems, "\n"))
	}
	if b.dialogs > 0 {
		t.Errorf("the page opened %d JavaScript dialogs (request data ran as script)", b.dialogs)
	}
}

// A second run is denied through the web page (headless Chromium, signed in
// through OIDC): the namespace stays. The page escapes request data: a
// request for a resource named <script>... shows the text and runs nothing.
func TestWebDenyInBrowser(t *testing.T) {
	w := newWorld(t)
	b := w.startBroker(t, "sqlite://"+t.TempDir()+"/broker.db")
	ns := w.c.Namespace(t)
	r := w.startRun(t, b, "201", "octocat", "")
	done := r.kubectl("delete", "ns", ns, "--wait=false")
	a := r.pending(b)

	// A hostile client files a request whose data is markup.
	evil := `<script>alert(document.domain)</script><img src=x onerror=alert(1)>`
	var hostile api.Approval
	if err := r.client.Do(context.Background(), http.MethodPost, api.PathApprovals, api.ApprovalFiling{AuditID: "evil", Method: "DELETE",
		Path: "/api/v1/namespaces/" + ns + "/configmaps/x", BodyDigest: approval.BodyDigest(nil), Rule: `rule-"><script>alert(2)</script>`,
		Message:    evil,
		Attributes: api.ApprovalAttributes{Verb: "delete", Resource: "configmaps", Namespace: ns, Name: evil},
		Preview:    &api.Preview{Kind: api.PreviewDiff, DryRun: true, Diff: "--- live\n+++ after\n@@ -1 +1 @@\n-a: 1\n+" + evil + "\n"},
		Command:    []string{"kubectl", "delete", "cm", evil}}, &hostile); err != nil {
		t.Fatal(err)
	}

	br := newBrowser(t)
	dir := t.TempDir()
	var png, evilPNG []byte
	var listHTML, evilText string
	var scripts int
	steps := []struct {
		name string
		acts []chromedp.Action
	}{
		// Sign in through the OIDC provider (code + PKCE) and land on the list.
		{"sign in and list", []chromedp.Action{chromedp.Navigate(b.URL + "/approvals/"),
			chromedp.WaitVisible(`a[href="/approvals/`+a.ID+`"]`, chromedp.ByQuery),
			chromedp.OuterHTML("main", &listHTML, chromedp.ByQuery)}},
		// The hostile one shows its markup as text.
		{"hostile page", []chromedp.Action{chromedp.Navigate(b.URL + "/approvals/" + hostile.ID),
			chromedp.WaitVisible(`textarea#reason`, chromedp.ByQuery),
			chromedp.Text("main", &evilText, chromedp.ByQuery),
			chromedp.Evaluate(`document.querySelectorAll("script").length + document.querySelectorAll("img").length`, &scripts),
			chromedp.FullScreenshot(&evilPNG, 100)}},
		// The real one: read it, deny it with a reason.
		{"deny", []chromedp.Action{chromedp.Navigate(b.URL + "/approvals/" + a.ID),
			chromedp.WaitVisible(`textarea#reason`, chromedp.ByQuery),
			chromedp.FullScreenshot(&png, 100),
			chromedp.SendKeys(`textarea#reason`, "not during the freeze", chromedp.ByQuery),
			chromedp.Click(`button.deny`, chromedp.ByQuery),
			chromedp.WaitVisible(`p.notice`, chromedp.ByQuery)}},
	}
	for _, st := range steps {
		sctx, cancel := context.WithTimeout(br.ctx, 30*time.Second)
		err := chromedp.Run(sctx, st.acts...)
		cancel()
		if err != nil {
			var loc, html string
			_ = chromedp.Run(br.ctx, chromedp.Location(&loc), chromedp.OuterHTML("body", &html, chromedp.ByQuery))
			t.Fatalf("step %q: %v\nat %s:\n%s", st.name, err, loc, html)
		}
	}
	if w.idp.Logins() != 1 {
		t.Errorf("sign-ins at the provider: %d", w.idp.Logins())
	}
	if !strings.Contains(listHTML, a.ID) || !strings.Contains(listHTML, "delete namespaces "+ns) {
		t.Errorf("the list does not show the held request:\n%s", listHTML)
	}
	if !strings.Contains(evilText, evil) || !strings.Contains(evilText, `rule-"><script>alert(2)</script>`) {
		t.Errorf("the hostile request's data is not shown as text:\n%s", evilText)
	}
	if scripts != 0 {
		t.Errorf("request data became %d script/img elements", scripts)
	}
	for name, b := range map[string][]byte{"approval-page.png": png, "approval-page-hostile.png": evilPNG} {
		if len(b) < 1000 || string(b[1:4]) != "PNG" {
			t.Fatalf("screenshot %s is not a PNG (%d bytes)", name, len(b))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile("/tmp/approval-page.png", png, 0o644)
	_ = os.WriteFile("/tmp/approval-page-hostile.png", evilPNG, 0o644)
	t.Logf("screenshots in %s and /tmp/approval-page.png", dir)

	res := wait(t, done, 60*time.Second)
	if res.code == 0 || !strings.Contains(res.stderr, "Forbidden") || !strings.Contains(res.stderr, "denied by carol@example.com: not during the freeze") {
		t.Fatalf("kubectl after the web denial: %+v", res)
	}
	if w.namespaceDeleting(t, ns) {
		t.Fatal("a denied delete reached the cluster")
	}
	stored, err := b.Store.GetApproval(context.Background(), a.ID)
	if err != nil || stored.State != "denied" || len(stored.Decisions) != 1 || stored.Decisions[0].Reviewer != "carol@example.com" {
		t.Fatalf("stored approval: %+v %v", stored, err)
	}
	br.check(t)
}

// The web page's forms refuse a POST without the session's CSRF token.
func TestWebCSRF(t *testing.T) {
	w := newWorld(t)
	b := w.startBroker(t, "sqlite://"+t.TempDir()+"/broker.db")
	r := w.startRun(t, b, "202", "octocat", "")
	var filed api.Approval
	if err := r.client.Do(context.Background(), http.MethodPost, api.PathApprovals, api.ApprovalFiling{AuditID: "csrf", Method: "DELETE",
		Path: "/api/v1/namespaces/x", BodyDigest: approval.BodyDigest(nil), Rule: "r", Attributes: api.ApprovalAttributes{Verb: "delete", Resource: "namespaces", Namespace: "x", Name: "x"}}, &filed); err != nil {
		t.Fatal(err)
	}
	br := newBrowser(t)
	var status string
	ctx, cancel := context.WithTimeout(br.ctx, 30*time.Second)
	defer cancel()
	err := chromedp.Run(ctx,
		chromedp.Navigate(b.URL+"/approvals/"+filed.ID),
		chromedp.WaitVisible(`textarea#reason`, chromedp.ByQuery),
		// Tamper with the form's token as a forged form would have it.
		chromedp.SetAttributeValue(`form.decide input[name=csrf]`, "value", "forged", chromedp.ByQuery),
		chromedp.Click(`button.approve`, chromedp.ByQuery),
		chromedp.WaitVisible(`p.message`, chromedp.ByQuery),
		chromedp.Text(`p.message`, &status, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("driving the page: %v", err)
	}
	if !strings.Contains(status, "CSRF check failed") {
		t.Errorf("forged form: %q", status)
	}
	stored, err := b.Store.GetApproval(context.Background(), filed.ID)
	if err != nil || stored.State != "pending" || len(stored.Decisions) != 0 {
		t.Fatalf("a forged form decided: %+v %v", stored, err)
	}
}
