package events

import (
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultSize is how many events a Broker keeps for replay.
	DefaultSize = 1000
	// DefaultBuffer is how many events a subscriber may fall behind before
	// it is dropped.
	DefaultBuffer = 256
)

// Broker numbers events, keeps the last Size of them, and fans them out to
// subscribers. Its zero value is ready to use; set the fields before the
// first Publish and do not change them afterwards. All methods are safe for
// concurrent use.
//
// Publish never blocks on a subscriber: each has a channel of Buffer
// events, and one whose channel is full is dropped. So a stalled client
// delays neither a credential holder nor a request; it loses its
// subscription and replays from the ring when it reconnects.
type Broker struct {
	// Size bounds the replay ring; zero is DefaultSize.
	Size int
	// Buffer is each subscriber's backlog; zero is DefaultBuffer.
	Buffer int
	// Now is the clock that stamps events; nil is time.Now.
	Now func() time.Time

	mu      sync.Mutex
	ring    []Event // oldest at head once full
	head    int
	last    uint64
	subs    map[*Subscription]struct{}
	dropped atomic.Uint64
}

// Subscription is one subscriber's view of the stream: the events it asked
// to replay, then the live ones on C.
type Subscription struct {
	// Replay holds the events after the requested ID still in the ring,
	// oldest first.
	Replay []Event
	// Missed reports that events after the requested ID had already left
	// the ring: Replay starts later than asked.
	Missed bool

	c       chan Event
	b       *Broker
	dropped atomic.Bool
}

// C delivers the events published after Subscribe, in order. It is closed
// when the subscription ends: by Close, or because the subscriber fell
// behind (Dropped).
func (s *Subscription) C() <-chan Event { return s.c }

// Dropped reports that the broker ended the subscription because its
// backlog was full.
func (s *Subscription) Dropped() bool { return s.dropped.Load() }

// Close ends the subscription; safe to call more than once, and after the
// broker dropped it.
func (s *Subscription) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if _, ok := s.b.subs[s]; ok {
		delete(s.b.subs, s)
		close(s.c)
	}
}

// Publish stamps e with the next ID (and the time, unless set), keeps it in
// the ring and hands it to every subscriber without waiting: a subscriber
// whose backlog is full is dropped instead. It returns the stamped event.
// Safe from any goroutine; its cost does not grow with the ring.
func (b *Broker) Publish(e Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last++
	e.ID = b.last
	if e.Time.IsZero() {
		e.Time = b.now()
	}
	e.Time = e.Time.UTC()
	b.keep(e)
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			s.dropped.Store(true)
			delete(b.subs, s)
			close(s.c)
			b.dropped.Add(1)
		}
	}
	return e
}

// keep puts e in the ring; called with b.mu held.
func (b *Broker) keep(e Event) {
	size := b.Size
	if size <= 0 {
		size = DefaultSize
	}
	if len(b.ring) < size {
		b.ring = append(b.ring, e)
		return
	}
	b.ring[b.head] = e
	b.head = (b.head + 1) % size
}

func (b *Broker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// Subscribe starts a subscription. With replay set, Replay holds the
// events after ID since that the ring still has; an ID ahead of the last
// one published (a client that followed an earlier process) replays the
// whole ring. Without replay only events published from now on arrive.
// The replay and the live channel join without a gap or a repeat.
func (b *Broker) Subscribe(since uint64, replay bool) *Subscription {
	buf := b.Buffer
	if buf <= 0 {
		buf = DefaultBuffer
	}
	s := &Subscription{c: make(chan Event, buf), b: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if replay {
		if since > b.last {
			since = 0
		}
		s.Replay, s.Missed = b.after(since)
	}
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	return s
}

// after copies the ring's events with IDs above since, oldest first, and
// reports whether some were already gone; called with b.mu held.
func (b *Broker) after(since uint64) ([]Event, bool) {
	n := len(b.ring)
	if n == 0 {
		return nil, false
	}
	oldest := b.ring[b.head].ID
	missed := since+1 < oldest
	var out []Event
	for i := range n {
		if e := b.ring[(b.head+i)%n]; e.ID > since {
			out = append(out, e)
		}
	}
	return out, missed
}

// Last is the ID of the last event published, 0 before the first.
func (b *Broker) Last() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// Subscribers is how many subscriptions are live.
func (b *Broker) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Dropped counts the subscriptions ended because they fell behind.
func (b *Broker) Dropped() uint64 { return b.dropped.Load() }
