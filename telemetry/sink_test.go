package telemetry

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLineSinkWritesScrubbedLinesInOrder(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor()
	r.Add("hunter2")
	s := NewLineSink(&out, r.Bytes, 16, 0)
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
	s := NewLineSink(w, nil, 4, 0)
	for i := 0; i < 100; i++ { // would block forever if Submit waited
		l := s.Get()
		l.B = append(l.B, "x\n"...)
		s.Submit(l)
	}
	// The writer holds a few lines in its buffer and the queue four; the
	// rest are dropped.
	if d := s.Dropped(); d < 50 {
		t.Fatalf("dropped %d of 100 lines behind a stuck writer, want most", d)
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

// chanWriter reports each write call on a channel.
type chanWriter chan string

func (w chanWriter) Write(p []byte) (int, error) { w <- string(p); return len(p), nil }

func TestLineSinkBatchesLinesWithinTheInterval(t *testing.T) {
	w := make(chanWriter, 16)
	s := NewLineSink(w, nil, 64, time.Hour)
	defer s.Close()
	for _, txt := range []string{"a\n", "b\n", "c\n"} {
		l := s.Get()
		l.B = append(l.B, txt...)
		s.Submit(l)
	}
	select {
	case got := <-w:
		t.Fatalf("wrote %q before the interval or a half-full queue", got)
	default:
	}
	// Filling half the queue wakes the writer, which writes the lines
	// queued so far in one call.
	for i := 3; i < 40; i++ {
		l := s.Get()
		l.B = append(l.B, "x\n"...)
		s.Submit(l)
	}
	select {
	case got := <-w:
		if !strings.HasPrefix(got, "a\nb\nc\nx\n") || strings.Count(got, "\n") < 32 {
			t.Fatalf("first write %q, want a, b, c and at least 29 more lines", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a half-full queue did not wake the writer")
	}
}

func TestLineSinkWritesAfterTheInterval(t *testing.T) {
	w := make(chanWriter, 16)
	s := NewLineSink(w, nil, 64, 20*time.Millisecond)
	defer s.Close()
	l := s.Get()
	l.B = append(l.B, "only\n"...)
	s.Submit(l)
	select {
	case got := <-w:
		if got != "only\n" {
			t.Fatalf("wrote %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a lone line was never written")
	}
}

func TestLineSinkCloseWritesWhatIsWaiting(t *testing.T) {
	var out bytes.Buffer
	s := NewLineSink(&out, nil, 64, time.Hour)
	for i := 0; i < 5; i++ {
		l := s.Get()
		l.B = append(l.B, "y\n"...)
		s.Submit(l)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the flush interval")
	}
	if out.String() != strings.Repeat("y\n", 5) {
		t.Fatalf("got %q", out.String())
	}
}
