package approvals

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// pageData is what every page template gets. Everything in it that came
// from a request is escaped by html/template on output.
type pageData struct {
	Title     string
	Session   *webSession
	Approvals []api.Approval
	Approval  *api.Approval
	Message   string
	Error     string
	Notice    string
	Login     bool
	Now       time.Time
}

type diffLine struct {
	Class string
	Text  string
}

var funcs = template.FuncMap{
	"summary": Summary,
	"run":     Run,
	"diffLines": func(s string) []diffLine {
		var out []diffLine
		for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			c := ""
			switch {
			case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
				c = "hdr"
			case strings.HasPrefix(l, "+"):
				c = "add"
			case strings.HasPrefix(l, "-"):
				c = "del"
			case strings.HasPrefix(l, "@@"):
				c = "hunk"
			}
			out = append(out, diffLine{Class: c, Text: l})
		}
		return out
	},
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"left": func(t, now time.Time) string {
		d := t.Sub(now).Round(time.Second)
		if d <= 0 {
			return "expired"
		}
		return d.String() + " left"
	},
	"join": strings.Join,
}

var pages = template.Must(template.New("pages").Funcs(funcs).Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · kubectl-agent</title>
<link rel="stylesheet" href="/approvals/static/style.css">
<link rel="icon" href="data:,">
</head><body>
<header><a class="brand" href="/approvals/">kubectl-agent approvals</a>
{{with .Session}}<form class="who" method="post" action="/approvals/logout"><span>Signed in as <b>{{.Reviewer.Name}}</b>{{with .Reviewer.Groups}} <small>({{join . ", "}})</small>{{end}}</span>
<input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit" class="link">Sign out</button></form>{{end}}
</header><main>{{end}}

{{define "foot"}}</main></body></html>{{end}}

{{define "message"}}{{template "head" .}}
<h1>{{.Title}}</h1><p class="message">{{.Message}}</p>
{{if .Login}}<p><a class="button" href="/approvals/login">Sign in</a></p>{{end}}
{{template "foot" .}}{{end}}

{{define "list"}}{{template "head" .}}
<h1>Pending approvals</h1>
{{if .Approvals}}
<table class="list"><thead><tr><th>Request</th><th>Run</th><th>Rule</th><th>Expires</th></tr></thead><tbody>
{{range .Approvals}}<tr>
<td><a href="/approvals/{{.ID}}">{{summary .}}</a><br><small class="id">{{.ID}}</small></td>
<td>{{run .Requester}}</td><td>{{.Rule}}</td><td>{{left .ExpiresAt $.Now}}</td></tr>
{{end}}</tbody></table>
{{else}}<p class="empty">Nothing is waiting for you.</p>{{end}}
{{template "foot" .}}{{end}}

{{define "detail"}}{{template "head" .}}
{{with .Approval}}
<p><a href="/approvals/">← all pending approvals</a></p>
<h1><span class="state {{.State}}">{{.State}}</span> {{summary .}}</h1>
{{with $.Notice}}<p class="notice">Your decision is recorded. The approval is now {{.}}.</p>{{end}}
{{with $.Error}}<p class="error">{{.}}</p>{{end}}
<dl>
<dt>Request</dt><dd><code>{{.Method}} {{.Path}}</code></dd>
<dt>Rule</dt><dd>{{.Rule}}{{with .Message}}: {{.}}{{end}}</dd>
<dt>Run</dt><dd>{{run .Requester}}</dd>
{{with .Command}}<dt>Command</dt><dd><code>{{join . " "}}</code></dd>{{end}}
<dt>Cluster</dt><dd>{{.Cluster}}</dd>
<dt>Filed</dt><dd>{{ts .CreatedAt}}</dd>
<dt>Expires</dt><dd>{{ts .ExpiresAt}} ({{left .ExpiresAt $.Now}})</dd>
<dt>Needs</dt><dd>{{.Required}} approval{{if gt .Required 1}}s{{end}}{{with .Groups}} from {{join . ", "}}{{end}}</dd>
<dt>Body digest</dt><dd><code>{{.BodyDigest}}</code></dd>
<dt>ID</dt><dd><code>{{.ID}}</code></dd>
</dl>
<h2>What it would do</h2>
{{with .Preview}}
{{if not .DryRun}}<p class="note">No server-side dry run{{with .Note}}: {{.}}{{end}}</p>{{else}}{{with .Note}}<p class="note">{{.}}</p>{{end}}{{end}}
{{with .Deletes}}<table class="counts"><thead><tr><th>Resource</th><th>Objects that would go</th></tr></thead><tbody>
{{range .}}<tr><td>{{.Resource}}</td><td>{{.Count}}</td></tr>{{end}}</tbody></table>{{end}}
{{with .Diff}}<pre class="diff">{{range diffLines .}}<span class="{{.Class}}">{{.Text}}</span>
{{end}}</pre>{{end}}
{{with .Object}}<pre class="object">{{.}}</pre>{{end}}
{{else}}<p class="note">The client sent no preview.</p>{{end}}
{{with .Decisions}}<h2>Decisions</h2><table class="list"><thead><tr><th>Reviewer</th><th>Verdict</th><th>Reason</th><th>Time</th></tr></thead><tbody>
{{range .}}<tr><td>{{.Reviewer}}</td><td>{{.Verdict}}</td><td>{{.Reason}}</td><td>{{ts .Time}}</td></tr>{{end}}</tbody></table>{{end}}
{{if eq .State "pending"}}
<h2>Decide</h2>
<form method="post" action="/approvals/{{.ID}}/decision" class="decide">
<input type="hidden" name="csrf" value="{{$.Session.CSRF}}">
<label for="reason">Reason (recorded with your name)</label>
<textarea id="reason" name="reason" rows="3" maxlength="2000"></textarea>
<div class="buttons"><button type="submit" name="verdict" value="approve" class="approve">Approve</button>
<button type="submit" name="verdict" value="deny" class="deny">Deny</button></div>
</form>
<p class="cli">From a terminal: <code>{{.ApproveCommand}}</code></p>
{{end}}
{{end}}
{{template "foot" .}}{{end}}
`))

func (w *web) render(rw http.ResponseWriter, status int, name string, d pageData) {
	d.Now = w.h.now()
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, d); err != nil {
		w.h.log.Error("approvals web: rendering", "page", name, "err", err)
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(status)
	_, _ = rw.Write(buf.Bytes())
}

const styleCSS = `
:root { --fg:#1f2328; --dim:#59636e; --line:#d1d9e0; --bg:#f6f8fa; --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #fff; }
header { display:flex; justify-content:space-between; align-items:center; padding: 10px 24px; background: #24292f; color: #fff; }
header a.brand { color:#fff; font-weight:600; text-decoration:none; }
header .who { display:flex; gap: 12px; align-items:center; margin:0; }
header small { color:#d0d7de; }
button.link { background:none; border:none; color:#9ecbff; cursor:pointer; font: inherit; padding:0; }
main { max-width: 1000px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 12px 0; word-break: break-all; }
h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align:left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; word-break: break-word; }
th { background: var(--bg); font-weight:600; }
small.id { color: var(--dim); font-family: ui-monospace, monospace; }
dl { display:grid; grid-template-columns: 140px 1fr; gap: 4px 16px; margin: 12px 0; }
dt { color: var(--dim); } dd { margin:0; word-break: break-all; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow-x: auto; }
pre.diff .add { color: var(--ok); background: #dafbe1; display:inline-block; width:100%; }
pre.diff .del { color: var(--bad); background: #ffebe9; display:inline-block; width:100%; }
pre.diff .hunk { color: var(--accent); } pre.diff .hdr { color: var(--dim); font-weight:600; }
.state { display:inline-block; font-size: 13px; padding: 2px 8px; border-radius: 12px; vertical-align: middle; text-transform: uppercase; }
.state.pending { background:#fff8c5; color: var(--warn); } .state.approved { background:#dafbe1; color: var(--ok); }
.state.denied, .state.expired { background:#ffebe9; color: var(--bad); }
.notice { background:#dafbe1; padding: 8px 12px; border-radius: 6px; }
.error { background:#ffebe9; color: var(--bad); padding: 8px 12px; border-radius: 6px; }
.note { color: var(--dim); }
form.decide { display:flex; flex-direction:column; gap: 8px; max-width: 640px; }
textarea { font: inherit; padding: 8px; border: 1px solid var(--line); border-radius: 6px; }
.buttons { display:flex; gap: 12px; }
button.approve, button.deny, a.button { font: inherit; font-weight:600; padding: 6px 18px; border-radius: 6px; border: 1px solid rgba(31,35,40,.15); cursor:pointer; text-decoration:none; }
button.approve { background: var(--ok); color:#fff; } button.deny { background: var(--bad); color:#fff; }
a.button { background: var(--accent); color:#fff; display:inline-block; }
.cli { color: var(--dim); }
.empty { color: var(--dim); }
`
