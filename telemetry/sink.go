package telemetry

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// LineSink writes log lines off the request path: Submit hands a finished
// line to a background writer and never blocks; when the queue is full the
// line is dropped and counted, so a slow log sink can never stall traffic.
// Every line passes through Scrub before it is written.
type LineSink struct {
	w     io.Writer
	scrub func([]byte) []byte
	every time.Duration
	queue chan *Line
	wake  chan struct{} // the queue is half full: write now
	stop  chan struct{} // closed by Close
	pool  sync.Pool
	done  chan struct{}
	once  sync.Once

	dropped atomic.Uint64
}

// Line is a reusable line buffer; fill B and Submit it.
type Line struct{ B []byte }

// NewLineSink starts the writer goroutine; Close stops it. queue bounds the
// lines waiting to be written. A line is written at most `every` after it
// is submitted, sooner when the queue is half full; every = 0 writes lines
// as soon as the writer gets to them.
func NewLineSink(w io.Writer, scrub func([]byte) []byte, queue int, every time.Duration) *LineSink {
	s := &LineSink{w: w, scrub: scrub, every: every, queue: make(chan *Line, queue),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
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
		return
	}
	if len(s.queue) >= cap(s.queue)/2 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Dropped is the number of lines dropped because the queue was full.
func (s *LineSink) Dropped() uint64 { return s.dropped.Load() }

// run writes queued lines in batches. It waits for the first line of a
// batch, then lets lines gather for up to every (or until the queue is half
// full) before scrubbing and writing them all at once. Waking the writer
// for each line would cost a goroutine switch and a write call per request;
// a send into a buffered channel with no receiver waiting costs neither,
// and one scrub over a batch is cheaper than one per line. An idle sink
// sleeps without a timer.
func (s *LineSink) run() {
	defer close(s.done)
	var buf []byte
	var timer *time.Timer
	if s.every > 0 {
		timer = time.NewTimer(s.every)
		timer.Stop()
	}
	for {
		l, ok := <-s.queue
		if !ok {
			return
		}
		buf = s.add(buf[:0], l)
		if timer != nil {
			timer.Reset(s.every)
			select {
			case <-timer.C:
			case <-s.wake:
				timer.Stop()
			case <-s.stop:
				timer.Stop()
			}
		}
		buf, ok = s.drain(buf)
		s.write(buf)
		if !ok {
			return
		}
		if cap(buf) > batchMax {
			buf = nil // a burst's buffer is not kept
		}
	}
}

// batchMax is the most a batch gathers before it is written.
const batchMax = 256 << 10

// drain adds the lines queued now to buf, up to batchMax, writing full
// batches as it goes; ok is false once the queue is closed and empty.
func (s *LineSink) drain(buf []byte) (_ []byte, ok bool) {
	for {
		select {
		case l, ok := <-s.queue:
			if !ok {
				return buf, false
			}
			if len(buf)+len(l.B) > batchMax {
				s.write(buf)
				buf = buf[:0]
			}
			buf = s.add(buf, l)
		default:
			return buf, true
		}
	}
}

func (s *LineSink) add(buf []byte, l *Line) []byte {
	buf = append(buf, l.B...)
	s.pool.Put(l)
	return buf
}

// write scrubs a batch and writes it in one call.
func (s *LineSink) write(b []byte) {
	if len(b) == 0 {
		return
	}
	if s.scrub != nil {
		b = s.scrub(b)
	}
	_, _ = s.w.Write(b)
}

// Close writes what is queued, then stops. Submit must not be called after.
func (s *LineSink) Close() {
	s.once.Do(func() {
		close(s.stop)
		close(s.queue)
	})
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
