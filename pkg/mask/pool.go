package mask

import (
	"bufio"
	"io"
)

// Scratch buffers larger than this are dropped after use rather than kept
// for the next call, so that one huge object does not pin its memory.
const maxPooled = 1 << 20

func (m *Masker) getWalker() *walker {
	if w, ok := m.walkers.Get().(*walker); ok {
		return w
	}
	return &walker{m: m}
}

func (m *Masker) putWalker(w *walker) {
	if cap(w.mbuf) > maxPooled/32 || cap(w.edits) > maxPooled/32 {
		return
	}
	w.reset(nil, 0)
	m.walkers.Put(w)
}

func (m *Masker) getReader(src io.Reader) *reader {
	r, ok := m.readers.Get().(*reader)
	if !ok {
		r = &reader{}
	}
	*r = reader{src: src, buf: r.buf[:0]}
	return r
}

func (m *Masker) putReader(r *reader) {
	if cap(r.buf) > maxPooled {
		return
	}
	*r = reader{buf: r.buf[:0]}
	m.readers.Put(r)
}

func (m *Masker) getWriter(dst io.Writer) *bufio.Writer {
	if w, ok := m.writers.Get().(*bufio.Writer); ok {
		w.Reset(dst)
		return w
	}
	return bufio.NewWriterSize(dst, 32<<10)
}

func (m *Masker) putWriter(w *bufio.Writer) {
	w.Reset(nil)
	m.writers.Put(w)
}
