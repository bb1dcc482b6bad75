package telemetry

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
)

func TestLineSinkWritesScrubbedLinesInOrder(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor()
	r.Add("hunter2")
	s := NewLineSink(&out, r.Bytes, 16)
	for _, txt := range []string{"a hunter2\n", "b\n"} {
		l := s.Get()
		l.B = append(l.B, txt...)
		s.Submit(l)
	}
	s.Close()
	if got := out.String(); got != "a "+Mask+"\nb\n" {
		t.Fatalf("got %q", got)
	}
}

// blockingWriter blocks every write until released.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) { <-w.release; return len(p), nil }

func TestLineSinkNeverBlocksOnSlowWriter(t *testing.T) {
	w := blockingWriter{release: make(chan struct{})}
	s := NewLineSink(w, nil, 4)
	for i := 0; i < 100; i++ { // would block forever if Submit waited
		l := s.Get()
		l.B = append(l.B, "x\n"...)
		s.Submit(l)
	}
	if d := s.Dropped(); d < 100-4-1 {
		t.Fatalf("dropped %d, want at least %d", d, 100-4-1)
	}
	close(w.release)
	s.Close()
}

func TestLockedWriterKeepsLinesWhole(t *testing.T) {
	var out bytes.Buffer
	w := &LockedWriter{W: &out}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for j := 0; j < 100; j++ {
				_, _ = io.WriteString(w, strings.Repeat("z", 100)+"\n")
			}
		})
	}
	wg.Wait()
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if len(line) != 100 {
			t.Fatalf("torn line of %d bytes", len(line))
		}
	}
}
