package injector

import (
	"time"

	"github.com/sidekey/sidekey/config"
)

// Scheduling defaults. The functions below are pure: the holder passes in
// the time and a random draw in [0, 1), so the arithmetic is table-tested
// without a clock or a random source.
const (
	// refreshJitter is the largest share of the lead by which a refresh is
	// moved earlier, so that replicas holding the same credential do not
	// all ask the issuer at the same instant.
	refreshJitter = 0.10
	// minRefreshDelay is the shortest wait before a scheduled refresh, so
	// that a value arriving already inside its refresh window (a lead
	// longer than the lifetime, a source returning an expired value) does
	// not make the holder fetch in a tight loop. RefreshEvery may be
	// shorter: that is an explicit request.
	minRefreshDelay = time.Second
	// defaultRetryMin and defaultRetryMax bound the backoff between failed
	// fetches.
	defaultRetryMin = time.Second
	defaultRetryMax = time.Minute
	// retryJitter is the largest share of a backoff delay taken off it.
	retryJitter = 0.25
)

// refreshLead is how long before expiresAt a value is refreshed: before's
// Duration when set, else its Fraction (config.DefaultRefreshBefore when
// zero, at most 1) of the lifetime from issuedAt to expiresAt.
func refreshLead(issuedAt, expiresAt time.Time, before config.RefreshBefore) time.Duration {
	if before.Duration > 0 {
		return before.Duration
	}
	f := before.Fraction
	if f <= 0 {
		f = config.DefaultRefreshBefore
	}
	f = min(f, 1)
	life := expiresAt.Sub(issuedAt)
	if life <= 0 {
		return 0
	}
	return time.Duration(f * float64(life))
}

// refreshAt returns when a value fetched at now should be refreshed, or the
// zero time for never. A value with an expiry is refreshed when the lead
// (refreshLead) is left, made earlier by up to refreshJitter of the lead
// (jitter in [0, 1) picks how much), but not sooner than minRefreshDelay
// from now. every > 0 caps the wait at every; a value without an expiry is
// refreshed every `every`, or never when every is zero (a watch or a forced
// refresh may still replace it).
func refreshAt(now, issuedAt, expiresAt time.Time, before config.RefreshBefore, every time.Duration, jitter float64) time.Time {
	var at time.Time
	if !expiresAt.IsZero() {
		lead := refreshLead(issuedAt, expiresAt, before)
		lead += time.Duration(jitter * refreshJitter * float64(lead))
		at = expiresAt.Add(-lead)
		if floor := now.Add(minRefreshDelay); at.Before(floor) {
			at = floor
		}
	}
	if every > 0 {
		if limit := now.Add(every); at.IsZero() || limit.Before(at) {
			at = limit
		}
	}
	return at
}

// Backoff is the delay after the given number of consecutive failures
// before this one (0 for the first failure): lo doubled per failure,
// capped at hi, then shortened by up to retryJitter (jitter in [0, 1)
// picks how much) so that replicas spread out. Zero lo or hi take the
// defaults.
func Backoff(failures int, lo, hi time.Duration, jitter float64) time.Duration {
	if lo <= 0 {
		lo = defaultRetryMin
	}
	if hi <= 0 {
		hi = defaultRetryMax
	}
	hi = max(hi, lo)
	d := lo
	for i := 0; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return time.Duration(float64(d) * (1 - retryJitter*jitter))
}

// RetryAt returns when to retry after a failure: after delay, but never
// later than the current value's expiry (zero: none) while that is still
// ahead, so a value is not let lapse without a last attempt.
func RetryAt(now time.Time, delay time.Duration, expiresAt time.Time) time.Time {
	at := now.Add(delay)
	if !expiresAt.IsZero() && expiresAt.After(now) && expiresAt.Before(at) {
		return expiresAt
	}
	return at
}
