package events

import (
	"sync"
	"sync/atomic"
	"time"
)

// Limiter lets through at most one event per Every for each key (a caller
// refusal's reason), counting the ones it holds back, so that a flood of
// refusals becomes one event a second saying how many there were. Allow
// is lock-free and allocates nothing once a key has been seen; the first
// sight of a key takes a lock and copies the (small) key table. The zero
// value lets one event a second through per key.
type Limiter struct {
	// Every is the least time between two events of one key; zero is 1s.
	Every time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	keys atomic.Pointer[map[string]*limit]
	mu   sync.Mutex // serialises adding keys
}

type limit struct {
	last    atomic.Int64 // unix nanoseconds of the last event let through; 0: none yet
	pending atomic.Uint64
}

// Allow counts one occurrence of key and reports whether an event for it
// may be published now, with how many occurrences it stands for (this one
// and those held back since the last event of that key).
func (l *Limiter) Allow(key string) (uint64, bool) {
	k := l.lookup(key)
	k.pending.Add(1)
	now := l.now().UnixNano()
	last := k.last.Load()
	if last != 0 && now-last < int64(l.every()) {
		return 0, false
	}
	if !k.last.CompareAndSwap(last, now) {
		return 0, false // another goroutine let this period's event through
	}
	return k.pending.Swap(0), true
}

func (l *Limiter) lookup(key string) *limit {
	if m := l.keys.Load(); m != nil {
		if k := (*m)[key]; k != nil {
			return k
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.keys.Load()
	if old != nil {
		if k := (*old)[key]; k != nil {
			return k
		}
	}
	next := make(map[string]*limit, 1)
	if old != nil {
		for name, k := range *old {
			next[name] = k
		}
	}
	k := &limit{}
	next[key] = k
	l.keys.Store(&next)
	return k
}

func (l *Limiter) every() time.Duration {
	if l.Every > 0 {
		return l.Every
	}
	return time.Second
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}
