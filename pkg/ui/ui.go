// Package ui prints what kubectl-agent has to say to people: lipgloss styles on
// a terminal, plain text when the stream is not a terminal or NO_COLOR is set,
// and GitHub Actions annotations and step summaries when GITHUB_ACTIONS=true.
package ui

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/term"
	"github.com/muesli/termenv"
)

// UI writes status lines to one stream (normally stderr, so that stdout stays
// machine-readable).
type UI struct {
	w      io.Writer
	color  bool
	github bool
	env    func(string) string
	r      *lipgloss.Renderer
	styles styles
}

type styles struct {
	ok, warn, bad, dim, bold, step lipgloss.Style
}

// New returns a UI that writes to w. Color is on only when w is a terminal and
// NO_COLOR is unset; GitHub output only when GITHUB_ACTIONS=true.
func New(w io.Writer) *UI { return NewWithEnv(w, os.Getenv) }

// NewWithEnv is New with the environment given, for tests.
func NewWithEnv(w io.Writer, env func(string) string) *UI {
	u := &UI{w: w, env: env, github: env("GITHUB_ACTIONS") == "true"}
	if f, ok := w.(interface{ Fd() uintptr }); ok && env("NO_COLOR") == "" && env("TERM") != "dumb" {
		u.color = term.IsTerminal(f.Fd())
	}
	u.r = lipgloss.NewRenderer(w)
	if !u.color {
		u.r.SetColorProfile(termenv.Ascii) // no escape codes at all
	}
	s := u.r.NewStyle
	u.styles = styles{
		ok:   s().Foreground(lipgloss.Color("10")).Bold(true),
		warn: s().Foreground(lipgloss.Color("11")).Bold(true),
		bad:  s().Foreground(lipgloss.Color("9")).Bold(true),
		dim:  s().Foreground(lipgloss.Color("8")),
		bold: s().Bold(true),
		step: s().Foreground(lipgloss.Color("12")).Bold(true),
	}
	return u
}

// Color reports whether styled output is on.
func (u *UI) Color() bool { return u.color }

// GitHub reports whether GitHub Actions workflow commands are written.
func (u *UI) GitHub() bool { return u.github }

// Renderer is the lipgloss renderer bound to this UI's stream and color mode.
func (u *UI) Renderer() *lipgloss.Renderer { return u.r }

func (u *UI) line(mark string, st lipgloss.Style, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if u.color {
		fmt.Fprintf(u.w, "%s %s\n", st.Render(mark), msg)
		return
	}
	fmt.Fprintf(u.w, "%s %s\n", mark, msg)
}

// Step announces what is about to happen.
func (u *UI) Step(format string, args ...any) { u.line("▸", u.styles.step, format, args...) }

// OK reports something that went as intended.
func (u *UI) OK(format string, args ...any) { u.line("✓", u.styles.ok, format, args...) }

// Warn reports something a person should look at.
func (u *UI) Warn(format string, args ...any) { u.line("!", u.styles.warn, format, args...) }

// Fail reports something that was refused or failed.
func (u *UI) Fail(format string, args ...any) { u.line("✗", u.styles.bad, format, args...) }

// Dim renders s de-emphasized (plain without color).
func (u *UI) Dim(s string) string { return u.styles.dim.Render(s) }

// Bold renders s emphasized (plain without color).
func (u *UI) Bold(s string) string { return u.styles.bold.Render(s) }

// Annotate writes a GitHub Actions workflow command (level: error, warning,
// notice) when running under GitHub Actions; elsewhere it does nothing.
func (u *UI) Annotate(level, title, msg string) {
	if !u.github {
		return
	}
	fmt.Fprintf(u.w, "::%s title=%s::%s\n", level, escapeProperty(title), escapeData(msg))
}

// StepSummary appends markdown to the GitHub Actions job summary
// ($GITHUB_STEP_SUMMARY). Outside GitHub Actions it does nothing.
func (u *UI) StepSummary(markdown string) error {
	path := u.env("GITHUB_STEP_SUMMARY")
	if !u.github || path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("writing GitHub step summary: %w", err)
	}
	if _, err := io.WriteString(f, strings.TrimRight(markdown, "\n")+"\n"); err != nil {
		f.Close()
		return fmt.Errorf("writing GitHub step summary: %w", err)
	}
	return f.Close()
}

// Workflow command escaping, as GitHub's @actions/core does it.
func escapeData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func escapeProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}
