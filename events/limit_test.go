package events

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestLimiterOnePerSecondPerKey(t *testing.T) {
	clk := &fakeClock{}
	clk.ns.Store(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC).UnixNano())
	l := &Limiter{Now: clk.now}
	type step struct {
		after time.Duration
		key   string
		n     uint64
		ok    bool
	}
	for i, s := range []step{
		{0, "a", 1, true},
		{0, "a", 0, false},
		{0, "b", 1, true}, // keys are separate
		{500 * time.Millisecond, "a", 0, false},
		{499 * time.Millisecond, "a", 0, false},
		{time.Millisecond, "a", 4, true}, // a second later: it stands for the 3 held back and itself
		{0, "a", 0, false},
		{3 * time.Second, "b", 1, true},
	} {
		clk.advance(s.after)
		n, ok := l.Allow(s.key)
		if n != s.n || ok != s.ok {
			t.Errorf("step %d: Allow(%q) = %d, %v; want %d, %v", i, s.key, n, ok, s.n, s.ok)
		}
	}
}

// Under a flood from many goroutines exactly one event per period gets
// through, and the counts add up to every occurrence.
func TestLimiterFloodCountsEverything(t *testing.T) {
	clk := &fakeClock{}
	clk.ns.Store(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC).UnixNano())
	l := &Limiter{Now: clk.now}
	var allowed, counted atomic.Uint64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if n, ok := l.Allow("host_not_allowed"); ok {
					allowed.Add(1)
					counted.Add(n)
				}
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 1 {
		t.Errorf("%d events let through within one period, want 1", allowed.Load())
	}
	clk.advance(time.Second)
	n, ok := l.Allow("host_not_allowed")
	if !ok || counted.Load()+n != 8001 {
		t.Errorf("counts add up to %d (last %d, %v), want 8001", counted.Load()+n, n, ok)
	}
}

// Allow allocates nothing once the key is known: a refusal flood costs no
// garbage.
func TestLimiterAllowDoesNotAllocate(t *testing.T) {
	l := &Limiter{}
	l.Allow("caller_unauthenticated")
	if n := testing.AllocsPerRun(1000, func() { l.Allow("caller_unauthenticated") }); n != 0 {
		t.Errorf("Allow allocates %v times per call, want 0", n)
	}
}
