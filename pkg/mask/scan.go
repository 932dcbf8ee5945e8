package mask

import (
	"errors"
	"fmt"
	"io"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds a small validating JSON scanner. The masker walks JSON as
// bytes instead of decoding it into maps: it finds the spans of the few values
// it must replace and copies everything else through unchanged, which is what
// makes a list of 5,000 Secrets cheap. Every byte that reaches the client has
// been checked by these functions, so the output is valid JSON whenever the
// input was, and input that is not valid JSON is an error (the proxy then
// fails closed).

// errIncomplete means the buffer ended inside a value: a streaming caller
// reads more and scans again, an in-memory caller reports bad JSON.
var errIncomplete = errors.New("unexpected end of JSON input")

// maxDepth bounds nesting, as encoding/json does, so that hostile input
// cannot exhaust the stack.
const maxDepth = 10000

type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string { return fmt.Sprintf("invalid JSON at byte %d: %s", e.off, e.msg) }

func synErr(off int, format string, args ...any) error {
	return &syntaxError{msg: fmt.Sprintf(format, args...), off: off}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipString checks the string whose opening quote is b[i] and returns the
// index after its closing quote and whether it holds escapes.
func skipString(b []byte, i int) (int, bool, error) {
	i++
	esc := false
	for {
		for i < len(b) {
			if c := b[i]; c < 0x20 || c == '"' || c == '\\' {
				break
			}
			i++
		}
		if i >= len(b) {
			return i, esc, errIncomplete
		}
		switch c := b[i]; c {
		case '"':
			return i + 1, esc, nil
		case '\\':
			esc = true
			if i+1 >= len(b) {
				return i, esc, errIncomplete
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(b) {
						return k, esc, errIncomplete
					}
					if !isHex(b[k]) {
						return k, esc, synErr(k, "invalid \\u escape")
					}
				}
				i += 6
			default:
				return i, esc, synErr(i+1, "invalid escape %q", b[i+1])
			}
		default:
			return i, esc, synErr(i, "control character %#x in string", c)
		}
	}
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	for k := 0; k < len(lit); k++ {
		if i+k >= len(b) {
			return i + k, errIncomplete
		}
		if b[i+k] != lit[k] {
			return i + k, synErr(i+k, "invalid literal")
		}
	}
	return i + len(lit), nil
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// skipNumber checks a number. A number that reaches the end of the buffer is
// incomplete: the masker's documents are objects, so a number is always
// followed by something.
func skipNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return i, errIncomplete
	}
	switch c := b[i]; {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		i = skipDigits(b, i+1)
	default:
		return i, synErr(i, "invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) {
			return i, errIncomplete
		}
		if b[i] < '0' || b[i] > '9' {
			return i, synErr(i, "invalid number")
		}
		i = skipDigits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) {
			return i, errIncomplete
		}
		if b[i] < '0' || b[i] > '9' {
			return i, synErr(i, "invalid number")
		}
		i = skipDigits(b, i)
	}
	if i >= len(b) {
		return i, errIncomplete
	}
	return i, nil
}

// skipValue checks the value that starts at b[i] (after optional
// whitespace) and returns the index just after it.
func skipValue(b []byte, i, depth int) (int, error) {
	i = skipWS(b, i)
	if i >= len(b) {
		return i, errIncomplete
	}
	switch c := b[i]; c {
	case '{':
		return skipObject(b, i, depth)
	case '[':
		return skipArray(b, i, depth)
	case '"':
		end, _, err := skipString(b, i)
		return end, err
	case 't':
		return skipLiteral(b, i, "true")
	case 'f':
		return skipLiteral(b, i, "false")
	case 'n':
		return skipLiteral(b, i, "null")
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return skipNumber(b, i)
		}
		return i, synErr(i, "unexpected %q", c)
	}
}

func skipObject(b []byte, i, depth int) (int, error) {
	if depth >= maxDepth {
		return i, synErr(i, "nested too deeply")
	}
	i = skipWS(b, i+1)
	if i >= len(b) {
		return i, errIncomplete
	}
	if b[i] == '}' {
		return i + 1, nil
	}
	for {
		if b[i] != '"' {
			return i, synErr(i, "expected a key")
		}
		var err error
		if i, _, err = skipString(b, i); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return i, errIncomplete
		}
		if b[i] != ':' {
			return i, synErr(i, "expected ':'")
		}
		if i, err = skipValue(b, i+1, depth+1); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return i, errIncomplete
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
			if i >= len(b) {
				return i, errIncomplete
			}
		case '}':
			return i + 1, nil
		default:
			return i, synErr(i, "expected ',' or '}'")
		}
	}
}

func skipArray(b []byte, i, depth int) (int, error) {
	if depth >= maxDepth {
		return i, synErr(i, "nested too deeply")
	}
	i = skipWS(b, i+1)
	if i >= len(b) {
		return i, errIncomplete
	}
	if b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = skipValue(b, i, depth+1); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return i, errIncomplete
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1, nil
		default:
			return i, synErr(i, "expected ',' or ']'")
		}
	}
}

// The functions below work on JSON the scanner has checked already, and so
// look for the end of values only.

// fastSkip returns the end of the checked value at b[i].
func fastSkip(b []byte, i int) int {
	switch b[i] {
	case '"':
		return fastString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = fastString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // a number or a literal
		for i < len(b) {
			if c := b[i]; c == ',' || c == '}' || c == ']' || isSpace(c) {
				break
			}
			i++
		}
		return i
	}
}

// fastString returns the end of the checked string whose quote is b[i].
func fastString(b []byte, i int) int {
	i++
	for i < len(b) {
		switch b[i] {
		case '"':
			return i + 1
		case '\\':
			i += 2
		default:
			i++
		}
	}
	return len(b)
}

// unquote decodes a checked JSON string (quotes included).
func unquote(raw []byte) string { return string(appendUnquoted(nil, raw)) }

func hex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		default:
			c = c - 'A' + 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnquoted appends the decoded content of a checked JSON string (quotes
// included) exactly as encoding/json decodes it: invalid UTF-8 and lone
// surrogates become U+FFFD. What the masker reads inside a string must be what
// the client will read.
func appendUnquoted(dst, raw []byte) []byte {
	s := raw[1 : len(raw)-1]
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\\' && s[i] < utf8.RuneSelf {
			i++
		}
		dst = append(dst, s[:i]...)
		s = s[i:]
		if len(s) == 0 {
			break
		}
		if s[0] >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s)
			if r == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, s[:size]...)
			}
			s = s[size:]
			continue
		}
		switch c := s[1]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[2:])
			s = s[6:]
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if len(s) >= 6 && s[0] == '\\' && s[1] == 'u' {
					r2 = hex4(s[2:])
				}
				if dec := utf16.DecodeRune(r, r2); dec != unicode.ReplacementChar {
					r = dec
					s = s[6:]
				} else {
					r = unicode.ReplacementChar
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // " \ /
			dst = append(dst, c)
		}
		s = s[2:]
	}
	return dst
}

// appendQuoted appends s as a JSON string.
func appendQuoted(dst, s []byte) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

// appendEscaped appends s escaped for the inside of a JSON string.
func appendEscaped[S ~string | ~[]byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	return append(dst, s[start:]...)
}

// reader holds the part of a streamed document that is being looked at. It
// reads more only when a value is not complete yet, so memory is bounded by
// the largest value the caller asks for at once (one list item, one watch
// event), not by the document.
type reader struct {
	src io.Reader
	buf []byte
	pos int // next byte to look at
	eof bool
	err error // read error other than io.EOF
}

// fill reads once more from src, growing the buffer when it is full. The
// caller scans again afterwards; growth by doubling keeps that linear for
// sources that fill what they are given.
func (r *reader) fill() error {
	if r.err != nil {
		return r.err
	}
	if r.eof {
		return io.ErrUnexpectedEOF
	}
	if len(r.buf) == cap(r.buf) {
		n := 2 * cap(r.buf)
		if n < 32<<10 {
			n = 32 << 10
		}
		nb := make([]byte, len(r.buf), n)
		copy(nb, r.buf)
		r.buf = nb
	}
	for tries := 0; tries < 100; tries++ {
		n, err := r.src.Read(r.buf[len(r.buf):cap(r.buf)])
		r.buf = r.buf[:len(r.buf)+n]
		if err == io.EOF {
			r.eof = true
			return nil
		}
		if err != nil {
			r.err = err
			return err
		}
		if n > 0 {
			return nil
		}
	}
	r.err = io.ErrNoProgress
	return r.err
}

// compact drops the bytes before pos, which the caller is done with.
func (r *reader) compact() {
	if r.pos == 0 {
		return
	}
	n := copy(r.buf, r.buf[r.pos:])
	r.buf = r.buf[:n]
	r.pos = 0
}

// ws skips whitespace and returns the next byte; ok is false at the end of
// the input (err is then nil) or on a read error.
func (r *reader) ws() (c byte, ok bool, err error) {
	for {
		r.pos = skipWS(r.buf, r.pos)
		if r.pos < len(r.buf) {
			return r.buf[r.pos], true, nil
		}
		if r.eof {
			return 0, false, nil
		}
		if err := r.fill(); err != nil {
			return 0, false, err
		}
	}
}

// next is ws for places where the input must go on.
func (r *reader) next() (byte, error) {
	c, ok, err := r.ws()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, io.ErrUnexpectedEOF
	}
	return c, nil
}

// value makes sure the whole value at pos is buffered and checked, and
// returns its end.
func (r *reader) value() (int, error) {
	for {
		end, err := skipValue(r.buf, r.pos, 1)
		if err != errIncomplete {
			return end, err
		}
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
}

// str is value for a string (an object's key).
func (r *reader) str() (int, bool, error) {
	for {
		end, esc, err := skipString(r.buf, r.pos)
		if err != errIncomplete {
			return end, esc, err
		}
		if err := r.fill(); err != nil {
			return 0, false, err
		}
	}
}
