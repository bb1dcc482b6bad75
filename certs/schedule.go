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
)

// renewAt returns when a certificate valid from notBefore to notAfter,
// received at now, is renewed: two thirds into its lifetime, earlier by up
// to renewJitter of the lifetime (jitter picks how much), and no sooner
// than minRenewDelay from now. The lifetime counts from receipt when that is
// later than notBefore: Vault backdates notBefore (30s by default), which
// would otherwise make a short-lived certificate due at once.
func renewAt(now, notBefore, notAfter time.Time, jitter float64) time.Time {
	start := notBefore
	if now.After(start) && now.Before(notAfter) {
		start = now
	}
	life := notAfter.Sub(start)
	at := start.Add(time.Duration(renewFraction*float64(life)) - time.Duration(jitter*renewJitter*float64(life)))
	if floor := now.Add(minRenewDelay); at.Before(floor) {
		return floor
	}
	return at
}
