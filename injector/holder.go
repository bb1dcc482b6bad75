package injector

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/singleflight"

	"github.com/sidekey/sidekey/config"
)

// ErrUnavailable is returned by Acquire when the credential has no value, or
// its value is past expires_at + max_stale.
var ErrUnavailable = errors.New("credential unavailable")

// errClosed is returned by refreshes after Revoke.
var errClosed = errors.New("credential holder is closed")

// SecretSet receives every live secret value so that log output can be
// scrubbed of it. telemetry.Redactor implements it. A holder adds a value
// before any request can use it and removes it once no request holds it and
// it is revoked or expired. Calls may come from several goroutines.
type SecretSet interface {
	Add(values ...string)
	Remove(values ...string)
}

// States a Status reports.
const (
	// StateFresh: the value is valid and nothing is amiss.
	StateFresh = "fresh"
	// StateRefreshing: a fetch is in progress, or a retry is pending after
	// a failed one; also before the first fetch has finished.
	StateRefreshing = "refreshing"
	// StateStale: past its expiry but within max_stale; still served.
	StateStale = "stale"
	// StateExpired: past expiry + max_stale; Acquire fails.
	StateExpired = "expired"
	// StateFailed: no value was ever fetched and the last attempt failed.
	StateFailed = "failed"
)

// Results passed to Holder.OnRotate.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// Log field names.
const (
	fieldCredential = "credential"
	fieldOldVersion = "old_version"
	fieldNewVersion = "new_version"
	fieldVersion    = "version"
	fieldExpiresAt  = "expires_at"
	fieldRetryIn    = "retry_in"
	fieldReason     = "reason"
)

// Flight keys: concurrent refreshes of one kind share one source call.
// Watch signals have their own key so that a change noticed during a fetch
// is always followed by a fetch that starts after it.
const (
	flightFetch = "fetch"
	flightRenew = "renew"
	flightWatch = "watch"
)

const (
	// defaultRevokeGrace is how long a superseded value may stay in use
	// before it is revoked anyway.
	defaultRevokeGrace = 30 * time.Second
	// fetchTimeout bounds one source call, so that a hung issuer cannot
	// stall the holder and every request waiting on a forced refresh.
	fetchTimeout = time.Minute
	// maxIdleRetired is how many superseded values that no request holds
	// but that are neither revoked nor expired stay registered in Secrets.
	maxIdleRetired = 8
)

// Holder holds the current value of one credential and keeps it fresh.
//
// Configure it through the exported fields before its first use and do not
// change them afterwards; their zero values are useful. Run keeps the value
// fresh; Acquire, Refresh, RefreshAfter, Status and Revoke are safe for
// concurrent use with it and with each other.
type Holder struct {
	Name       string
	SourceName string // "file", "env", ... for status
	Source     Source
	// Clock is the source of time; nil is SystemClock.
	Clock Clock
	// RefreshEvery, when positive, bounds the time between refreshes; a
	// value without an expiry is re-fetched on a timer only when it is set.
	RefreshEvery time.Duration
	// RefreshBefore says how much of a value's lifetime is left when it is
	// refreshed; zero is config.DefaultRefreshBefore of it.
	RefreshBefore config.RefreshBefore
	// MaxStale is how long past its expiry a value is still handed out
	// while no new one can be fetched.
	MaxStale time.Duration
	// RevokeOld revokes a superseded value through the Source's Revoker
	// once no request holds it, or RevokeGrace (zero: 30s) after it was
	// superseded, whichever comes first.
	RevokeOld   bool
	RevokeGrace time.Duration
	// RetryMin and RetryMax bound the backoff after failed fetches: RetryMin
	// (zero: 1s) doubling up to RetryMax (zero: 1m), each delay shortened by
	// up to a quarter at random.
	RetryMin time.Duration
	RetryMax time.Duration
	// Key is the fingerprint HMAC key; empty draws a random one.
	Key []byte
	// Log receives rotation and failure lines, never a secret value; nil
	// discards them.
	Log logrus.FieldLogger
	// Secrets, when set, is told of every value the holder may hand out.
	Secrets SecretSet
	// OnRotate, when set, is called with the holder's Name and "success"
	// for every fetch that yields a new version (the first value included),
	// or "failure" for every failed fetch. A refresh that returns the same
	// value calls neither. It is called without locks held, from the
	// goroutine that fetched.
	OnRotate func(name, result string)
	// OnRevoke, when set, is told of every attempt to revoke a value at
	// its issuer (RevokeOld's superseded values, Revoke's at exit), after
	// it, with its error. It is called without locks held, from the
	// goroutine that revoked.
	OnRevoke func(Revocation)

	once       sync.Once
	clk        Clock
	log        logrus.FieldLogger
	key        []byte
	secrets    SecretSet // Secrets behind a countedSet; nil without Secrets
	revoker    Revoker
	errNoValue error
	random     func() float64 // draws in [0, 1) for jitter; tests fix it
	afterJoin  func()         // test hook: a refresh joined its flight

	cur     atomic.Pointer[Version]
	running atomic.Bool
	flights singleflight.Group
	fetchMu sync.Mutex // one Source call (Fetch or Renew) at a time

	watchC   chan struct{} // the Watcher signalled a change
	reschedC chan struct{} // a refresh outside Run moved the schedule
	reapC    chan struct{} // a value was superseded or drained

	mu        sync.Mutex // guards the fields below and lease bookkeeping
	runCtx    context.Context
	fetching  bool
	failures  int // consecutive failed fetches
	lastErr   string
	rotations uint64
	seq       uint64 // last self-assigned version number
	next      time.Time
	retired   []*lease // superseded values still tracked, oldest first
	closed    bool
}

// Version is one immutable value of a credential, reference-counted by the
// requests that hold it. A refresh that returns the same value stores a new
// Version with the same number and a later expiry; both count towards the
// same value's in-flight total.
type Version struct {
	secret      *Secret
	number      uint64
	fingerprint string
	deadline    time.Time // ExpiresAt + MaxStale; zero: never
	errExpired  error
	lease       *lease
}

// Secret returns the value, with IssuedAt always set. It is shared: do not
// modify it, and do not use it after Release.
func (v *Version) Secret() *Secret { return v.secret }

// Number is the source's version when it supplies one, else the holder's
// count of distinct values: 1, 2, 3...
func (v *Version) Number() uint64 { return v.number }

// Fingerprint is a short HMAC of the value (see the admin API); it reveals
// nothing about the value.
func (v *Version) Fingerprint() string { return v.fingerprint }

// Release returns a version taken by Acquire. Call it exactly once per
// Acquire, when the request no longer uses the value; a superseded value
// is revoked only after every request released it (or after RevokeGrace).
// It does not allocate or block.
func (v *Version) Release() {
	l := v.lease
	if l.refs.Add(-1) == 0 && l.wakeOnDrain.Load() {
		poke(l.h.reapC)
	}
}

// Revocation is one attempt to revoke a value, for Holder.OnRevoke. It
// holds no secret.
type Revocation struct {
	Name        string
	Version     uint64
	Fingerprint string
	// Reason is "superseded" (RevokeOld, once drained or graced) or "exit"
	// (Revoke).
	Reason string
	// InFlight is how many requests still held the value: 0 once drained.
	InFlight int64
	Err      error
}

// revokeState is where a value is on its way to revocation.
type revokeState uint8

const (
	revokeNone    revokeState = iota // not wanted (yet)
	revokeWanted                     // superseded, RevokeOld: once drained or graced
	revokeRunning                    // a Revoke call is in progress
	revokeDone                       // attempted once; never again
)

// lease is one distinct value of the credential, shared by the Versions
// that differ only in lifetime. Requests count on it, so that drain and
// revocation follow the value rather than a Version pointer.
type lease struct {
	refs atomic.Int64
	// wakeOnDrain: superseded, and the reaper has work once it drains (to
	// revoke it, or to drop it when expired); a Release to zero wakes it.
	wakeOnDrain atomic.Bool
	h           *Holder
	number      uint64
	fingerprint string

	// Guarded by h.mu.
	secret     *Secret // the latest Secret of this value, for Revoke
	values     []string
	registered bool // values are in h.secrets
	revoke     revokeState
	graceAt    time.Time
}

func (h *Holder) init() {
	h.once.Do(func() {
		h.clk = h.Clock
		if h.clk == nil {
			h.clk = SystemClock{}
		}
		h.log = h.Log
		if h.log == nil {
			l := logrus.New()
			l.Out = io.Discard
			l.Level = logrus.PanicLevel
			h.log = l
		}
		h.key = h.Key
		if len(h.key) == 0 {
			h.key = make([]byte, 32)
			rand.Read(h.key) // never fails
		}
		if h.random == nil {
			h.random = mathrand.Float64
		}
		h.secrets = newCountedSet(h.Secrets)
		h.revoker, _ = h.Source.(Revoker)
		h.errNoValue = fmt.Errorf("credential %q has no value: %w", h.Name, ErrUnavailable)
		h.watchC = make(chan struct{}, 1)
		h.reschedC = make(chan struct{}, 1)
		h.reapC = make(chan struct{}, 1)
	})
}

// Acquire returns the current value for one request, which must Release
// it. The request keeps this version even if a newer one is stored
// meanwhile. It fails with an error wrapping ErrUnavailable when there is no
// value or the value is past ExpiresAt + MaxStale.
//
// Acquire is lock-free and does not allocate: at most one clock read (none
// for a value without expiry), an atomic load and an atomic increment,
// re-checked against a concurrent swap.
func (h *Holder) Acquire() (*Version, error) {
	h.init()
	var now time.Time // read once, and only for a value that expires
	for {
		v := h.cur.Load()
		if v == nil {
			return nil, h.errNoValue
		}
		if !v.deadline.IsZero() {
			if now.IsZero() {
				now = h.clk.Now()
			}
			if now.After(v.deadline) {
				return nil, v.errExpired
			}
		}
		v.lease.refs.Add(1)
		// A swap between the load and the increment may already have
		// retired v and seen it drained, and the reaper may revoke it: hand
		// v out only if it is still current after the increment. Then any
		// later swap sees the increment and waits for Release.
		if h.cur.Load() == v {
			return v, nil
		}
		v.Release()
	}
}

// Run fetches the first value, retrying with backoff until it succeeds,
// then keeps it fresh: it refreshes ahead of expiry and every RefreshEvery,
// fetches when a Watcher source signals a change, retries failures with
// backoff, and revokes superseded values once drained. It blocks until ctx
// ends (or Revoke closed the holder) and returns nil; a fetch failure is
// never fatal. A second Run while one runs returns an error at once.
func (h *Holder) Run(ctx context.Context) error {
	h.init()
	if !h.running.CompareAndSwap(false, true) {
		return fmt.Errorf("credential %q: holder is already running", h.Name)
	}
	defer h.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		h.setRunContext(nil)
	}()
	h.setRunContext(ctx)
	if w, ok := h.Source.(Watcher); ok {
		wg.Go(func() { h.watch(ctx, w) })
	}
	wg.Go(func() { h.reap(ctx) })
	h.loop(ctx)
	return nil
}

func (h *Holder) setRunContext(ctx context.Context) {
	h.mu.Lock()
	h.runCtx = ctx
	h.mu.Unlock()
}

// loop fetches, then waits for the scheduled time, a watch signal or a
// schedule change made by a forced refresh.
func (h *Holder) loop(ctx context.Context) {
	flight := flightFetch
	for {
		if flight != "" {
			err := h.refreshHere(ctx, flight)
			if errors.Is(err, errClosed) || ctx.Err() != nil {
				return
			}
		}
		flight = ""
		var timer Timer
		var fire <-chan time.Time
		if at := h.nextRefresh(); !at.IsZero() {
			timer = h.clk.NewTimer(at.Sub(h.clk.Now()))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-fire:
			flight = h.timerFlight()
		case <-h.watchC:
			flight = flightWatch
		case <-h.reschedC:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (h *Holder) nextRefresh() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.next
}

// timerFlight renews a value whose source can renew it, else fetches.
func (h *Holder) timerFlight() string {
	if _, ok := h.Source.(Renewer); ok && h.cur.Load() != nil {
		return flightRenew
	}
	return flightFetch
}

// watch runs the source's Watch until ctx ends, restarting it with backoff
// when it fails, and turns its signals into fetches. Bursts coalesce: one
// pending signal at most.
func (h *Holder) watch(ctx context.Context, w Watcher) {
	changed := func() { poke(h.watchC) }
	for failures := 0; ; failures++ {
		err := w.Watch(ctx, changed)
		if ctx.Err() != nil {
			return
		}
		d := Backoff(failures, h.RetryMin, h.RetryMax, h.random())
		e := h.log.WithFields(logrus.Fields{fieldCredential: h.Name, fieldRetryIn: d.String()})
		if err != nil {
			e = e.WithError(err)
		}
		e.Warn("credential watch stopped")
		if !h.sleep(ctx, d) {
			return
		}
		changed() // a change may have been missed while not watching
	}
}

// sleep waits d on the holder's clock; false when ctx ended first.
func (h *Holder) sleep(ctx context.Context, d time.Duration) bool { return Sleep(ctx, h.clk, d) }

// Refresh fetches a new value now, whatever the schedule. Concurrent
// callers share one fetch and all get its error; a fetch already running
// is joined rather than repeated. A failure keeps the current value. The
// fetch runs under Run's context (else one detached from ctx), so a caller
// giving up does not cancel it for the others.
func (h *Holder) Refresh(ctx context.Context) error {
	h.init()
	err := h.refresh(ctx, flightFetch, nil)
	poke(h.reschedC)
	return err
}

// RefreshAfter is Refresh for a request that got an upstream 401 while
// holding v: when the current value is already another one than v, the
// refresh has happened and it returns nil at once. The same holds when the
// refresh completes between that check and the caller's joining a flight:
// the flight it would then start finds v superseded and fetches nothing.
func (h *Holder) RefreshAfter(ctx context.Context, v *Version) error {
	h.init()
	if v == nil {
		return h.Refresh(ctx)
	}
	if h.superseded(v.lease) {
		return nil
	}
	err := h.refresh(ctx, flightFetch, v.lease)
	poke(h.reschedC)
	return err
}

// superseded reports that l is no longer the current value.
func (h *Holder) superseded(l *lease) bool {
	cur := h.cur.Load()
	return cur != nil && cur.lease != l
}

// refresh runs or joins the flight of the given kind and waits for it or
// for ctx. A flight started with after set fetches only if after is still
// the current value when it starts.
func (h *Holder) refresh(ctx context.Context, flight string, after *lease) error {
	fctx := h.fetchContext(ctx)
	ch := h.flights.DoChan(flight, func() (any, error) {
		if after != nil && h.superseded(after) {
			return nil, nil
		}
		return nil, h.fetch(fctx, flight == flightRenew)
	})
	if h.afterJoin != nil {
		h.afterJoin()
	}
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshHere is refresh for Run's loop: the fetch runs on the loop's own
// goroutine (joining a flight another caller started), not on one started
// for it, and under Run's context. A watched source that changes every few
// milliseconds pays for no goroutine per change.
func (h *Holder) refreshHere(ctx context.Context, flight string) error {
	_, err, _ := h.flights.Do(flight, func() (any, error) {
		return nil, h.fetch(h.fetchContext(ctx), flight == flightRenew)
	})
	return err
}

func (h *Holder) fetchContext(ctx context.Context) context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.runCtx != nil {
		return h.runCtx
	}
	return context.WithoutCancel(ctx)
}

// fetch obtains a value from the source and stores it, or records the
// failure and schedules a retry.
func (h *Holder) fetch(ctx context.Context, renew bool) error {
	h.fetchMu.Lock()
	defer h.fetchMu.Unlock()
	if !h.begin() {
		return errClosed
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	s, err := h.obtain(ctx, renew)
	now := h.clk.Now()
	if err != nil {
		err = fmt.Errorf("fetching credential %q: %w", h.Name, err)
		h.failed(ctx, now, err)
		return err
	}
	return h.store(ctx, now, s)
}

// begin marks a fetch in progress; false when the holder is closed.
func (h *Holder) begin() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fetching = !h.closed
	return !h.closed
}

// obtain renews the current value when asked and possible, else fetches.
// A renewal that fails or does not extend the expiry falls back to a fetch.
func (h *Holder) obtain(ctx context.Context, renew bool) (*Secret, error) {
	if h.Source == nil {
		return nil, errors.New("no source configured")
	}
	if r, ok := h.Source.(Renewer); ok && renew {
		if cur := h.cur.Load(); cur != nil {
			s, err := r.Renew(ctx, cur.secret)
			if err == nil && s != nil && (s.ExpiresAt.IsZero() || s.ExpiresAt.After(cur.secret.ExpiresAt)) {
				return s, nil
			}
			e := h.log.WithField(fieldCredential, h.Name)
			if err != nil {
				e = e.WithError(err)
			}
			e.Debug("credential not renewed; fetching a new value")
		}
	}
	s, err := h.Source.Fetch(ctx)
	if err == nil && s == nil {
		err = errors.New("source returned no value")
	}
	return s, err
}

// failed records a failed fetch and schedules the retry: backoff, but not
// past the current value's expiry.
func (h *Holder) failed(ctx context.Context, now time.Time, err error) {
	h.mu.Lock()
	h.fetching = false
	if errors.Is(ctx.Err(), context.Canceled) {
		// Run is ending: not a failure of the source; the schedule stands.
		h.mu.Unlock()
		return
	}
	d := Backoff(h.failures, h.RetryMin, h.RetryMax, h.random())
	var expiresAt time.Time
	if v := h.cur.Load(); v != nil {
		expiresAt = v.secret.ExpiresAt
	}
	h.next = RetryAt(now, d, expiresAt)
	h.failures++
	h.lastErr = err.Error()
	retryIn := h.next.Sub(now)
	h.mu.Unlock()
	h.log.WithFields(logrus.Fields{fieldCredential: h.Name, fieldRetryIn: retryIn.String()}).
		WithError(err).Warn("credential fetch failed")
	h.notify(resultFailure)
}

// store swaps in a fetched value: a new immutable Version, stored once.
// The same value again (same fingerprint, same source version when set)
// keeps its version number and only moves its lifetime.
func (h *Holder) store(ctx context.Context, now time.Time, s *Secret) error {
	sec := *s
	if sec.IssuedAt.IsZero() {
		sec.IssuedAt = now
	}
	fp := fingerprint(h.key, &sec)

	h.mu.Lock()
	if h.closed {
		h.fetching = false
		h.mu.Unlock()
		h.revokeLate(ctx, &sec)
		return errClosed
	}
	old := h.cur.Load()
	same := old != nil && old.fingerprint == fp && (sec.Version == 0 || sec.Version == old.secret.Version)
	v := &Version{secret: &sec, fingerprint: fp}
	if !sec.ExpiresAt.IsZero() {
		v.deadline = sec.ExpiresAt.Add(h.MaxStale)
		v.errExpired = fmt.Errorf("credential %q expired at %s: %w",
			h.Name, sec.ExpiresAt.UTC().Format(time.RFC3339), ErrUnavailable)
	}
	if same {
		v.number, v.lease = old.number, old.lease
		v.lease.secret = &sec
	} else {
		v.number = sec.Version
		if v.number == 0 {
			h.seq++
			v.number = h.seq
		}
		v.lease = &lease{h: h, number: v.number, fingerprint: fp, secret: &sec, values: sec.Values()}
		h.register(v.lease) // before any request can see the value
		h.rotations++
	}
	h.cur.Store(v)
	h.fetching, h.failures, h.lastErr = false, 0, ""
	h.next = refreshAt(now, sec.IssuedAt, sec.ExpiresAt, h.RefreshBefore, h.RefreshEvery, h.random())
	if old != nil && !same {
		h.supersede(old.lease, now)
	}
	h.mu.Unlock()

	f := logrus.Fields{fieldCredential: h.Name, fieldExpiresAt: formatExpiry(sec.ExpiresAt)}
	if same {
		f[fieldVersion] = v.number
		h.log.WithFields(f).Debug("credential refreshed")
		return nil
	}
	f[fieldOldVersion], f[fieldNewVersion] = uint64(0), v.number
	if old != nil {
		f[fieldOldVersion] = old.number
	}
	h.log.WithFields(f).Info("credential rotated")
	h.notify(resultSuccess)
	return nil
}

func formatExpiry(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func (h *Holder) notify(result string) {
	if h.OnRotate != nil {
		h.OnRotate(h.Name, result)
	}
}

// supersede retires a value that is no longer current. Called with h.mu
// held, after the new value was stored.
func (h *Holder) supersede(l *lease, now time.Time) {
	if h.RevokeOld && h.revoker != nil {
		l.revoke = revokeWanted
		l.graceAt = now.Add(h.revokeGrace())
	}
	// A value neither revoked nor expiring (a static file, an API key) has
	// nothing waiting on its drain or on a clock: prune, here at every
	// rotation, bounds how many stay registered, and the reaper is left
	// asleep. A credential rotated every few milliseconds pays for no
	// wake-ups.
	wake := l.revoke == revokeWanted || !l.secret.ExpiresAt.IsZero()
	l.wakeOnDrain.Store(wake)
	h.retired = append(h.retired, l)
	h.prune(now)
	if wake {
		poke(h.reapC)
	}
}

func (h *Holder) revokeGrace() time.Duration {
	if h.RevokeGrace > 0 {
		return h.RevokeGrace
	}
	return defaultRevokeGrace
}

// reap revokes superseded values once drained or graced and unregisters
// dead ones, until ctx ends.
func (h *Holder) reap(ctx context.Context) {
	for {
		wake := h.sweep(ctx)
		var timer Timer
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer = h.clk.NewTimer(wake.Sub(h.clk.Now()))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-fire:
		case <-h.reapC:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// sweep revokes the superseded values that are due and returns when it
// next has something to do (zero: only when woken).
func (h *Holder) sweep(ctx context.Context) time.Time {
	now := h.clk.Now()
	h.mu.Lock()
	var due []*lease
	for _, l := range h.retired {
		if l.revoke == revokeWanted && (l.refs.Load() <= 0 || !now.Before(l.graceAt)) {
			l.revoke = revokeRunning
			due = append(due, l)
		}
	}
	h.mu.Unlock()
	h.revokeAll(ctx, due, "superseded")
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.prune(h.clk.Now())
}

// revokeAll revokes each lease, which the caller marked revokeRunning, and
// marks it done: one attempt per value. An attempt cut short by ctx is left
// for a later one (Revoke at exit). It returns the failures.
func (h *Holder) revokeAll(ctx context.Context, ls []*lease, why string) error {
	var errs []error
	for _, l := range ls {
		h.mu.Lock()
		sec := l.secret
		h.mu.Unlock()
		inFlight := l.refs.Load()
		err := h.revoker.Revoke(ctx, sec)
		h.mu.Lock()
		l.revoke = revokeDone
		if err != nil && ctx.Err() != nil {
			l.revoke = revokeWanted
		}
		h.mu.Unlock()
		f := logrus.Fields{fieldCredential: h.Name, fieldVersion: l.number}
		if err != nil {
			err = fmt.Errorf("revoking version %d of credential %q: %w", l.number, h.Name, err)
			h.log.WithFields(f).WithError(err).Warn("credential revocation failed")
			errs = append(errs, err)
		} else {
			f[fieldReason] = why
			h.log.WithFields(f).Info("credential revoked")
		}
		if h.OnRevoke != nil {
			h.OnRevoke(Revocation{Name: h.Name, Version: l.number, Fingerprint: l.fingerprint,
				Reason: why, InFlight: max(inFlight, 0), Err: err})
		}
	}
	return errors.Join(errs...)
}

// revokeLate revokes a value fetched after Revoke closed the holder: it
// was created by this process and will never be used.
func (h *Holder) revokeLate(ctx context.Context, s *Secret) {
	if h.revoker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	if err := h.revoker.Revoke(ctx, s); err != nil {
		h.log.WithField(fieldCredential, h.Name).WithError(err).Warn("credential revocation failed")
	}
}

// prune unregisters superseded values that are dead (drained and revoked
// or expired), keeps at most maxIdleRetired that are drained but still
// valid, forgets values with nothing left to do, and returns when a
// tracked value next needs attention. Called with h.mu held.
func (h *Holder) prune(now time.Time) time.Time {
	idle := 0
	for i := len(h.retired) - 1; i >= 0; i-- {
		l := h.retired[i]
		if !l.registered || l.refs.Load() > 0 {
			continue
		}
		switch {
		case l.revoke == revokeDone || expired(l.secret, now):
			h.unregister(l)
		case l.revoke == revokeNone:
			if idle++; idle > maxIdleRetired {
				h.unregister(l)
			}
		}
	}
	var wake time.Time
	kept := h.retired[:0]
	for _, l := range h.retired {
		if !l.registered && l.revoke != revokeWanted && l.revoke != revokeRunning {
			continue
		}
		kept = append(kept, l)
		if l.revoke == revokeWanted {
			wake = earliest(wake, l.graceAt)
		}
		if l.registered && !l.secret.ExpiresAt.IsZero() && now.Before(l.secret.ExpiresAt) {
			wake = earliest(wake, l.secret.ExpiresAt)
		}
	}
	clear(h.retired[len(kept):])
	h.retired = kept
	return wake
}

func expired(s *Secret, now time.Time) bool {
	return !s.ExpiresAt.IsZero() && !now.Before(s.ExpiresAt)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func (h *Holder) register(l *lease) {
	if h.secrets != nil && len(l.values) > 0 {
		h.secrets.Add(l.values...)
	}
	l.registered = true
}

func (h *Holder) unregister(l *lease) {
	if h.secrets != nil && len(l.values) > 0 {
		h.secrets.Remove(l.values...)
	}
	l.registered = false
}

// Revoke is for a clean exit, after Run has returned and requests have
// drained: it revokes, through the source's Revoker, the current value and
// every superseded one still tracked and not expired, then closes the
// holder: Acquire fails with ErrUnavailable and refreshes fail. Each value
// is revoked at most once, so Revoke may be called again; a value fetched
// after it is revoked at once. Revoked values leave Secrets once no request
// holds them. It returns the revocation failures.
func (h *Holder) Revoke(ctx context.Context) error {
	h.init()
	now := h.clk.Now()
	h.mu.Lock()
	h.closed = true
	if v := h.cur.Swap(nil); v != nil {
		v.lease.wakeOnDrain.Store(true)
		h.retired = append(h.retired, v.lease)
	}
	var due []*lease
	if h.revoker != nil {
		for _, l := range h.retired {
			if l.revoke == revokeWanted || (l.revoke == revokeNone && !expired(l.secret, now)) {
				l.revoke = revokeRunning
				due = append(due, l)
			}
		}
	}
	h.mu.Unlock()
	err := h.revokeAll(ctx, due, "exit")
	h.mu.Lock()
	h.prune(h.clk.Now())
	h.mu.Unlock()
	return err
}

// InFlight is the number of requests holding any value of this credential,
// current or superseded: zero means a removed credential has drained.
func (h *Holder) InFlight() int64 {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	if v := h.cur.Load(); v != nil {
		n += v.lease.refs.Load()
	}
	for _, l := range h.retired { // every one superseded
		n += l.refs.Load()
	}
	return n
}

// Status reports the holder's state for the admin API; it holds no secret.
func (h *Holder) Status() Status {
	h.init()
	now := h.clk.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	st := Status{
		Name:        h.Name,
		Source:      h.SourceName,
		NextRefresh: h.next,
		LastError:   h.lastErr,
		Rotations:   h.rotations,
	}
	v := h.cur.Load()
	if v != nil {
		st.Version = v.number
		st.Fingerprint = v.fingerprint
		st.IssuedAt = v.secret.IssuedAt
		st.ExpiresAt = v.secret.ExpiresAt
	}
	st.State = h.state(now, v)
	return st
}

// state classifies the holder; called with h.mu held.
func (h *Holder) state(now time.Time, v *Version) string {
	switch {
	case v == nil && h.lastErr != "":
		return StateFailed
	case v == nil:
		return StateRefreshing
	case !v.deadline.IsZero() && now.After(v.deadline):
		return StateExpired
	case !v.secret.ExpiresAt.IsZero() && now.After(v.secret.ExpiresAt):
		return StateStale
	case h.fetching || h.failures > 0:
		return StateRefreshing
	}
	return StateFresh
}

// Status is a holder's state as the admin API shows it. It holds no secret.
// Zero IssuedAt, ExpiresAt or NextRefresh mean none (ExpiresAt: never).
type Status struct {
	Name        string    `json:"name"`
	Source      string    `json:"source"`
	Version     uint64    `json:"version"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	NextRefresh time.Time `json:"next_refresh"`
	LastError   string    `json:"last_error"`
	Rotations   uint64    `json:"rotations"`
}

// poke sends a wake-up without blocking; one pending wake-up at most.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// countedSet counts Adds of each value and passes a value on to the
// underlying SecretSet when its count rises from zero, and a removal when
// it falls back to zero. Values shared between versions (a user name) or
// between credentials stay registered while any holder still has them,
// whatever the underlying set does with duplicates. Safe for concurrent
// use; the underlying set is called under the lock so that its adds and
// removes keep the counts' order.
type countedSet struct {
	next SecretSet
	mu   sync.Mutex
	n    map[string]int
}

func newCountedSet(next SecretSet) SecretSet {
	switch next := next.(type) {
	case nil:
		return nil
	case *countedSet:
		return next
	default:
		return &countedSet{next: next, n: make(map[string]int)}
	}
}

func (c *countedSet) Add(values ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first []string
	for _, v := range values {
		c.n[v]++
		if c.n[v] == 1 {
			first = append(first, v)
		}
	}
	if len(first) > 0 {
		c.next.Add(first...)
	}
}

func (c *countedSet) Remove(values ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last []string
	for _, v := range values {
		switch c.n[v] {
		case 0:
			continue
		case 1:
			delete(c.n, v)
			last = append(last, v)
		default:
			c.n[v]--
		}
	}
	if len(last) > 0 {
		c.next.Remove(last...)
	}
}
