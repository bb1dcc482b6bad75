package telemetry

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"
)

// LineSink writes log lines off the request path: Submit hands a finished
// line to a background writer and never blocks; when the queue is full the
// line is dropped and counted, so a slow log sink can never stall traffic.
// Every line passes through Scrub before it is written.
type LineSink struct {
	w     io.Writer
	scrub func([]byte) []byte
	queue chan *Line
	pool  sync.Pool
	done  chan struct{}
	once  sync.Once

	dropped atomic.Uint64
}

// Line is a reusable line buffer; fill B and Submit it.
type Line struct{ B []byte }

// NewLineSink starts the writer goroutine; Close stops it. queue bounds the
// lines waiting to be written.
func NewLineSink(w io.Writer, scrub func([]byte) []byte, queue int) *LineSink {
	s := &LineSink{w: w, scrub: scrub, queue: make(chan *Line, queue), done: make(chan struct{})}
	s.pool.New = func() any { return &Line{B: make([]byte, 0, 512)} }
	go s.run()
	return s
}

// Get returns an empty line to fill.
func (s *LineSink) Get() *Line {
	l := s.pool.Get().(*Line)
	l.B = l.B[:0]
	return l
}

// Submit queues l for writing, or drops it when the queue is full. l must
// not be used afterwards.
func (s *LineSink) Submit(l *Line) {
	select {
	case s.queue <- l:
	default:
		s.dropped.Add(1)
		s.pool.Put(l)
	}
}

// Dropped is the number of lines dropped because the queue was full.
func (s *LineSink) Dropped() uint64 { return s.dropped.Load() }

// run writes queued lines in batches: lines go into a buffer that is
// flushed whenever the queue is empty (or the buffer fills), so a busy proxy
// makes one write call per batch, not one per request.
func (s *LineSink) run() {
	defer close(s.done)
	bw := bufio.NewWriterSize(s.w, 64<<10)
	for l := range s.queue {
		s.write(bw, l)
		for drained := false; !drained; {
			select {
			case l, ok := <-s.queue:
				if !ok {
					_ = bw.Flush()
					return
				}
				s.write(bw, l)
			default:
				drained = true
			}
		}
		_ = bw.Flush()
	}
	_ = bw.Flush()
}

func (s *LineSink) write(bw *bufio.Writer, l *Line) {
	b := l.B
	if s.scrub != nil {
		b = s.scrub(b)
	}
	_, _ = bw.Write(b)
	s.pool.Put(l)
}

// Close writes what is queued, then stops. Submit must not be called after.
func (s *LineSink) Close() {
	s.once.Do(func() { close(s.queue) })
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
