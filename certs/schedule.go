package certs

import "time"

// Scheduling of client-certificate renewal. The functions are pure: the
// caller passes the time and a random draw in [0, 1), so they table-test
// without a clock.
const (
	// renewFraction is the share of a certificate's lifetime after which it
	// is renewed (Vault Agent and cert-manager renew at two thirds).
	renewFraction = 2.0 / 3
	// renewJitter is the largest share of the lifetime by which a renewal
	// is moved earlier, so replicas do not all ask Vault at once.
	renewJitter = 0.05
	// minRenewDelay keeps a certificate issued already inside its renewal
	// window from being renewed in a tight loop.
	minRenewDelay = time.Second
	// defaultRetryMin and defaultRetryMax bound the backoff after failures.
	defaultRetryMin = time.Second
	defaultRetryMax = time.Minute
	// retryJitter is the largest share of a backoff delay taken off it.
	retryJitter = 0.25
)

// renewAt returns when a certificate valid from notBefore to notAfter,
// received at now, is renewed: two thirds into its lifetime, earlier by up
// to renewJitter of the lifetime (jitter picks how much), and no sooner
// than minRenewDelay from now.
func renewAt(now, notBefore, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	at := notBefore.Add(time.Duration(renewFraction*float64(life)) - time.Duration(jitter*renewJitter*float64(life)))
	if floor := now.Add(minRenewDelay); at.Before(floor) {
		return floor
	}
	return at
}

// retryDelay is the backoff after `failures` consecutive failures before
// this one: lo doubled per failure up to hi, shortened by up to retryJitter
// (jitter picks how much). Zero lo or hi take the defaults.
func retryDelay(failures int, lo, hi time.Duration, jitter float64) time.Duration {
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

// retryAt returns when to retry after a failure: after delay, but no later
// than the current certificate's expiry (zero: none) while that is ahead,
// so a certificate does not lapse without a last attempt.
func retryAt(now time.Time, delay time.Duration, notAfter time.Time) time.Time {
	at := now.Add(delay)
	if !notAfter.IsZero() && notAfter.After(now) && notAfter.Before(at) {
		return notAfter
	}
	return at
}
