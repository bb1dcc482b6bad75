package telemetry

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// LineSink writes log lines off the request path. Submit copies a finished
// line into the batch being filled and never blocks on the output; a
// background writer scrubs each batch and writes it in one call. When the
// batch is full because the output is slow, lines are dropped and counted,
// so a slow log sink can never stall traffic.
//
// The batch is written at most `every` after its first line, or sooner once
// it holds 64 KiB (nginx's access_log buffer). A busy proxy thus makes a
// few write calls a second instead of one per request, and never wakes the
// writer per line. Two batch buffers take turns, one filling while the other
// is written; they grow past 64 KiB only while the writer falls behind, up
// to the sink's size.
type LineSink struct {
	w     io.Writer
	scrub func([]byte) []byte
	every time.Duration
	max   int // bytes waiting, at most
	at    int // bytes that wake the writer before every is up

	mu  sync.Mutex
	cur []byte // the batch being filled; guarded by mu

	first chan struct{} // a line went into an empty batch
	full  chan struct{} // the batch is big enough to write now
	stop  chan struct{} // closed by Close
	done  chan struct{}
	once  sync.Once

	dropped atomic.Uint64
}

// sinkBatch is the batch size that wakes the writer early.
const sinkBatch = 64 << 10

// NewLineSink starts the writer goroutine; Close stops it. size bounds the
// bytes waiting to be written. every = 0 writes each batch as soon as the
// writer gets to it.
func NewLineSink(w io.Writer, scrub func([]byte) []byte, size int, every time.Duration) *LineSink {
	s := &LineSink{w: w, scrub: scrub, every: every, max: size, at: min(sinkBatch, size/2),
		cur:   make([]byte, 0, min(size, 16<<10)),
		first: make(chan struct{}, 1), full: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

// Submit copies line, which must be whole lines, into the current batch, or
// drops it when the batch has no room. The caller keeps line.
func (s *LineSink) Submit(line []byte) {
	s.mu.Lock()
	n := len(s.cur)
	if n+len(line) > s.max {
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	}
	s.cur = append(s.cur, line...)
	wake := n < s.at && len(s.cur) >= s.at
	s.mu.Unlock()
	if n == 0 {
		signal(s.first)
	}
	if wake {
		signal(s.full)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Dropped is the number of lines dropped because the batch was full.
func (s *LineSink) Dropped() uint64 { return s.dropped.Load() }

// run waits for the first line of a batch, lets lines gather for up to
// every or until the batch is big enough, then swaps the batch out and
// writes it. An idle sink sleeps without a timer.
func (s *LineSink) run() {
	defer close(s.done)
	spare := make([]byte, 0, min(s.max, 16<<10))
	var timer *time.Timer
	if s.every > 0 {
		timer = time.NewTimer(s.every)
		timer.Stop()
	}
	for {
		select {
		case <-s.first:
		case <-s.stop:
			s.flush(spare)
			return
		}
		if timer != nil {
			timer.Reset(s.every)
			select {
			case <-timer.C:
			case <-s.full:
				timer.Stop()
			case <-s.stop:
				timer.Stop()
			}
		}
		spare = s.flush(spare)
	}
}

// flush swaps spare in as the batch being filled, then scrubs and writes
// the batch taken out; it returns that batch, emptied, as the next spare.
func (s *LineSink) flush(spare []byte) []byte {
	s.mu.Lock()
	b := s.cur
	s.cur = spare[:0]
	s.mu.Unlock()
	if len(b) > 0 {
		out := b
		if s.scrub != nil {
			out = s.scrub(out)
		}
		_, _ = s.w.Write(out)
	}
	return b[:0]
}

// Close writes what is waiting, then stops. Submit must not be called
// after.
func (s *LineSink) Close() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// LockedWriter serialises writes, so that lines from the logger and from a
// LineSink sharing one output never interleave.
type LockedWriter struct {
	mu sync.Mutex
	W  io.Writer
}

func (w *LockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.W.Write(p)
}
