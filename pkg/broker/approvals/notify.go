package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// WebhookMessage is the Slack-compatible JSON posted for a filed approval:
// `text` for any chat that takes incoming webhooks, `blocks` for Slack.
type WebhookMessage struct {
	Text   string `json:"text"`
	Blocks []any  `json:"blocks,omitempty"`
}

// Summary is one line saying what an approval is for: the request and the run.
func Summary(a api.Approval) string {
	at := a.Attributes
	what := a.Method + " " + a.Path
	if at.Resource != "" {
		res := at.Resource
		if at.Subresource != "" {
			res += "/" + at.Subresource
		}
		if at.APIGroup != "" {
			res += "." + at.APIGroup
		}
		what = at.Verb + " " + res
		if at.Name != "" {
			what += " " + at.Name
		}
		if at.Namespace != "" && at.Resource != "namespaces" {
			what += " in namespace " + at.Namespace
		}
	}
	return what
}

// Run names the run that made a request.
func Run(id api.Identity) string {
	s := id.Repository
	if s == "" {
		s = id.Subject
	}
	if id.Workflow != "" {
		s += " · " + id.Workflow
	}
	if id.RunID != "" {
		s += " · run " + id.RunID
		if id.RunAttempt != "" && id.RunAttempt != "1" {
			s += " (attempt " + id.RunAttempt + ")"
		}
	}
	if id.Ref != "" {
		s += " · " + id.Ref
	}
	if actor := id.Claims["actor"]; actor != "" {
		s += " · started by " + actor
	}
	return s
}

// slackEscape escapes the three characters Slack's mrkdwn reads as markup,
// so request data cannot make links or mentions.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// Message builds the webhook message of a filed approval.
func Message(a api.Approval) WebhookMessage {
	what, run := Summary(a), Run(a.Requester)
	text := fmt.Sprintf("kubectl-agent: approval needed for %s (rule %s) by %s. Review: %s or run: %s (expires %s)",
		what, a.Rule, run, a.URL, a.ApproveCommand, a.ExpiresAt.UTC().Format(time.RFC3339))
	md := fmt.Sprintf("*Approval needed:* `%s`\n*Rule:* %s\n*Run:* %s\n*Expires:* %s",
		slackEscape(what), slackEscape(a.Rule), slackEscape(run), a.ExpiresAt.UTC().Format(time.RFC3339))
	return WebhookMessage{
		Text: slackEscape(text),
		Blocks: []any{
			map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": md}},
			map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn",
				"text": fmt.Sprintf("<%s|Review on the web> or approve from a terminal:\n```%s```", a.URL, slackEscape(a.ApproveCommand))}},
		},
	}
}

// notify posts the approval's webhook message. Failures are logged: a
// notification that did not go out leaves the approval pending, to expire.
func (h *Handler) notify(ctx context.Context, hook string, a api.Approval) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, _ := json.Marshal(Message(a))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook, bytes.NewReader(b))
	if err != nil {
		h.log.Error("approval webhook", "approval", a.ID, "err", err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.cfg.HTTPClient.Do(req)
	if err != nil {
		// The URL may hold a secret (Slack's do): log the host only.
		h.log.Error("approval webhook failed", "approval", a.ID, "host", req.URL.Host, "err", redactURL(err, hook))
		return
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		h.log.Error("approval webhook refused", "approval", a.ID, "host", req.URL.Host, "status", resp.StatusCode)
		return
	}
	h.log.Info("approval webhook sent", "approval", a.ID, "host", req.URL.Host)
}

func redactURL(err error, u string) string {
	return strings.ReplaceAll(err.Error(), u, "[webhook URL]")
}
