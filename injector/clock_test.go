package injector

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests; nothing real should take
// anywhere near it.
const waitLimit = 10 * time.Second

// fakeClock is a Clock whose time moves only by Advance. Tests sync with
// the goroutines under test by waiting for the timers those arm.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever timers change
}

type fakeTimer struct {
	c    *fakeClock
	when time.Time
	ch   chan time.Time
}

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock {
	return &fakeClock{now: epoch, changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, when: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	c.signal()
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	c.signal()
	return true
}

// signal wakes waiters; called with c.mu held.
func (c *fakeClock) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Advance moves the time on by d and fires every timer now due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.when.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	clear(c.timers[len(kept):])
	c.timers = kept
	c.signal()
}

// AdvanceTo moves the time on to t.
func (c *fakeClock) AdvanceTo(t time.Time) { c.Advance(t.Sub(c.Now())) }

// BlockUntil waits until at least n timers are pending.
func (c *fakeClock) BlockUntil(tb testing.TB, n int) {
	tb.Helper()
	c.waitFor(tb, func() bool { return len(c.timers) >= n }, "%d pending timers", n)
}

// WaitTimer waits until a timer due at exactly `at` is pending: the
// goroutine that armed it has finished what came before.
func (c *fakeClock) WaitTimer(tb testing.TB, at time.Time) {
	tb.Helper()
	c.waitFor(tb, func() bool {
		return slices.ContainsFunc(c.timers, func(t *fakeTimer) bool { return t.when.Equal(at) })
	}, "a timer due at +%v", at.Sub(epoch))
}

func (c *fakeClock) waitFor(tb testing.TB, cond func() bool, what string, args ...any) {
	tb.Helper()
	limit := time.NewTimer(waitLimit)
	defer limit.Stop()
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		var pending []time.Duration
		for _, t := range c.timers {
			pending = append(pending, t.when.Sub(epoch))
		}
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-limit.C:
			tb.Fatalf("timed out waiting for "+what+"; pending timers at %v", append(args, pending)...)
		}
	}
}

func TestFakeClock(t *testing.T) {
	c := newFakeClock()
	a, b := c.NewTimer(time.Second), c.NewTimer(time.Minute)
	c.BlockUntil(t, 2)
	c.Advance(time.Second)
	select {
	case at := <-a.C():
		if !at.Equal(epoch.Add(time.Second)) {
			t.Errorf("fired at %v", at)
		}
	default:
		t.Fatal("due timer did not fire")
	}
	if !b.Stop() || b.Stop() {
		t.Error("Stop of a pending timer must report true once")
	}
	select {
	case <-c.NewTimer(0).C():
	default:
		t.Error("a timer of zero duration must fire at once")
	}
}
