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
	s := NewLineSink(&out, r.Bytes, 1<<10, 0)
	for _, txt := range []string{"a hunter2\n", "b\n"} {
		s.Submit([]byte(txt))
	}
	s.Close()
	if got := out.String(); got != "a "+Mask+"\nb\n" {
		t.Fatalf("got %q", got)
	}
}

func TestLineSinkCopiesTheLine(t *testing.T) {
	var out bytes.Buffer
	s := NewLineSink(&out, nil, 1<<10, time.Hour)
	b := []byte("first\n")
	s.Submit(b)
	copy(b, "xxxxx\n") // the caller reuses its buffer at once
	s.Close()
	if out.String() != "first\n" {
		t.Fatalf("got %q", out.String())
	}
}

// blockingWriter blocks every write until released.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) { <-w.release; return len(p), nil }

func TestLineSinkNeverBlocksOnSlowWriter(t *testing.T) {
	w := blockingWriter{release: make(chan struct{})}
	s := NewLineSink(w, nil, 40, 0) // room for 20 lines of 2 bytes
	for i := 0; i < 200; i++ {      // would block forever if Submit waited
		s.Submit([]byte("x\n"))
	}
	// The writer holds at most one batch and the sink one more; the rest
	// are dropped.
	if d := s.Dropped(); d < 200-2*20 {
		t.Fatalf("dropped %d of 200 lines behind a stuck writer, want at least %d", d, 200-2*20)
	}
	close(w.release)
	s.Close()
}

// chanWriter reports each write call on a channel.
type chanWriter chan string

func (w chanWriter) Write(p []byte) (int, error) { w <- string(p); return len(p), nil }

func TestLineSinkBatchesLinesWithinTheInterval(t *testing.T) {
	w := make(chanWriter, 16)
	s := NewLineSink(w, nil, 64, time.Hour) // writes early at 32 bytes
	defer s.Close()
	for _, txt := range []string{"a\n", "b\n", "c\n"} {
		s.Submit([]byte(txt))
	}
	select {
	case got := <-w:
		t.Fatalf("wrote %q before the interval or a full batch", got)
	case <-time.After(50 * time.Millisecond):
	}
	// Reaching the batch size wakes the writer, which writes the lines
	// gathered so far in one call.
	for i := 3; i < 16; i++ {
		s.Submit([]byte("x\n"))
	}
	select {
	case got := <-w:
		if want := "a\nb\nc\n" + strings.Repeat("x\n", 13); got != want {
			t.Fatalf("first write %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a full batch did not wake the writer")
	}
}

func TestLineSinkWritesAfterTheInterval(t *testing.T) {
	w := make(chanWriter, 16)
	s := NewLineSink(w, nil, 1<<10, 20*time.Millisecond)
	defer s.Close()
	s.Submit([]byte("only\n"))
	select {
	case got := <-w:
		if got != "only\n" {
			t.Fatalf("wrote %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a lone line was never written")
	}
	// The next batch starts its own interval.
	s.Submit([]byte("again\n"))
	select {
	case got := <-w:
		if got != "again\n" {
			t.Fatalf("wrote %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second batch was never written")
	}
}

func TestLineSinkCloseWritesWhatIsWaiting(t *testing.T) {
	var out bytes.Buffer
	s := NewLineSink(&out, nil, 1<<10, time.Hour)
	for i := 0; i < 5; i++ {
		s.Submit([]byte("y\n"))
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

func TestLineSinkConcurrentSubmitsLoseNothing(t *testing.T) {
	var out bytes.Buffer
	s := NewLineSink(&out, nil, 1<<20, time.Millisecond)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			line := []byte(strings.Repeat(string(rune('a'+g)), 50) + "\n")
			for i := 0; i < 500; i++ {
				s.Submit(line)
			}
		})
	}
	wg.Wait()
	s.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500 || s.Dropped() != 0 {
		t.Fatalf("%d lines written, %d dropped; want 4000 and 0", len(lines), s.Dropped())
	}
	for _, l := range lines {
		if len(l) != 50 || strings.Count(l, l[:1]) != 50 {
			t.Fatalf("torn line %q", l)
		}
	}
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
