package approval

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/ui"
)

func newUI(w io.Writer, getenv func(string) string) *ui.UI {
	if getenv == nil {
		getenv = os.Getenv
	}
	return ui.NewWithEnv(w, getenv)
}

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// waiter shows a held request while it waits: on a terminal a spinner line
// redrawn in place with the elapsed and remaining time; elsewhere one line
// when filed and one when decided. In GitHub Actions it also writes a
// warning annotation with the link, so the run page shows where to decide.
type waiter struct {
	u   *ui.UI
	w   io.Writer
	now func() time.Time
	a   api.Approval

	start0 time.Time
	done   chan struct{}
	wg     sync.WaitGroup
}

func newWaiter(w io.Writer, getenv func(string) string, now func() time.Time, a api.Approval) *waiter {
	if w == nil {
		return &waiter{now: now, a: a}
	}
	return &waiter{u: newUI(w, getenv), w: w, now: now, a: a}
}

func (w *waiter) start() {
	if w.u == nil {
		return
	}
	w.start0 = w.now()
	what := Summary(w.a)
	w.u.Warn("held for approval: %s (rule %q), approval %s, expires in %s", what, w.a.Rule, w.a.ID, w.a.ExpiresAt.Sub(w.start0).Round(time.Second))
	if w.a.URL != "" {
		fmt.Fprintf(w.w, "  review: %s\n", w.a.URL)
	}
	if w.a.ApproveCommand != "" {
		fmt.Fprintf(w.w, "  or run: %s\n", w.a.ApproveCommand)
	}
	w.u.Annotate("warning", "kubectl-agent: approval needed",
		fmt.Sprintf("%s is held by rule %q until a reviewer decides: %s (or: %s)", what, w.a.Rule, w.a.URL, w.a.ApproveCommand))
	if !w.u.Color() {
		return
	}
	w.done = make(chan struct{})
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			w.draw(i)
			select {
			case <-w.done:
				fmt.Fprint(w.w, "\r\033[2K")
				return
			case <-t.C:
			}
		}
	}()
}

func (w *waiter) draw(i int) {
	now := w.now()
	elapsed := now.Sub(w.start0).Round(time.Second)
	left := w.a.ExpiresAt.Sub(now).Round(time.Second)
	if left < 0 {
		left = 0
	}
	r := w.u.Renderer()
	spin := r.NewStyle().Foreground(lipgloss.Color("11")).Render(spinnerFrames[i%len(spinnerFrames)])
	fmt.Fprintf(w.w, "\r\033[2K%s waiting for approval %s  %s elapsed, %s left", spin, w.u.Bold(w.a.ID), elapsed, left)
}

// stop ends the display with the outcome (final nil: err says what failed).
func (w *waiter) stop(final *api.Approval, err error) {
	if w.done != nil {
		close(w.done)
		w.wg.Wait()
		w.done = nil
	}
	if w.u == nil {
		return
	}
	waited := w.now().Sub(w.start0).Round(time.Second)
	switch {
	case err != nil && final == nil:
		w.u.Fail("approval %s: %v", w.a.ID, err)
	case err != nil:
		w.u.Fail("approval %s was approved but could not be used: %v", w.a.ID, err)
	case final.State == api.ApprovalApproved:
		w.u.OK("approved after %s by %s%s", waited, reviewers(*final, api.VerdictApprove), reasonSuffix(*final, api.VerdictApprove))
	case final.State == api.ApprovalDenied:
		w.u.Fail("denied after %s by %s%s", waited, reviewers(*final, api.VerdictDeny), reasonSuffix(*final, api.VerdictDeny))
	case final.State == api.ApprovalExpired:
		w.u.Fail("approval %s expired after %s with no decision; the request is denied", w.a.ID, waited)
	default:
		w.u.Fail("approval %s ended %s", w.a.ID, final.State)
	}
}

func reasonSuffix(a api.Approval, verdict string) string {
	if r := reasons(a, verdict); r != "" {
		return ": " + r
	}
	return ""
}

// Summary says in a few words what a held request does.
func Summary(a api.Approval) string {
	at := a.Attributes
	if at.Resource == "" {
		return a.Method + " " + a.Path
	}
	res := at.Resource
	if at.Subresource != "" {
		res += "/" + at.Subresource
	}
	if at.APIGroup != "" {
		res += "." + at.APIGroup
	}
	what := at.Verb + " " + res
	if at.Name != "" {
		what += " " + at.Name
	}
	if at.Namespace != "" && at.Resource != "namespaces" {
		what += " in namespace " + at.Namespace
	}
	return what
}
