package injector

import (
	"context"
	"time"
)

// Clock is the holder's source of time. Holders read it for scheduling,
// status and the expiry check in Acquire; tests inject a fake so that no
// test sleeps. Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Clock hands out. A Timer created with
// d <= 0 fires at once.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the real clock: time.Now and time.NewTimer. It is the
// Clock a Holder uses when its Clock field is nil.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer returns a *time.Timer that fires after d.
func (SystemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

// Sleep waits d on clk; false when ctx ended first.
func Sleep(ctx context.Context, clk Clock, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
