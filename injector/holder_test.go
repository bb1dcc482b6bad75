package injector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/config"
)

// fakeSource serves values from a function the test sets. When gated, each
// Fetch announces itself on started and waits for a token on gate.
type fakeSource struct {
	fetches atomic.Int64

	mu      sync.Mutex
	fn      func(n int64) (*Secret, error)
	gate    chan struct{}
	started chan int64
	revoked []string
	revokeC chan string
}

func newFakeSource(fn func(n int64) (*Secret, error)) *fakeSource {
	return &fakeSource{fn: fn, revokeC: make(chan string, 100)}
}

func (s *fakeSource) set(fn func(n int64) (*Secret, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fn = fn
}

// gated makes every later Fetch wait for a token on the returned channel.
func (s *fakeSource) gated() (gate chan struct{}, started chan int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate, s.started = make(chan struct{}), make(chan int64, 100)
	return s.gate, s.started
}

func (s *fakeSource) Fetch(ctx context.Context) (*Secret, error) {
	n := s.fetches.Add(1)
	s.mu.Lock()
	fn, gate, started := s.fn, s.gate, s.started
	s.mu.Unlock()
	if gate != nil {
		started <- n
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return fn(n)
}

func (s *fakeSource) revokedValues() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.revoked)
}

// revokingSource adds the Revoker capability.
type revokingSource struct{ *fakeSource }

func (s revokingSource) Revoke(ctx context.Context, sec *Secret) error {
	s.mu.Lock()
	s.revoked = append(s.revoked, sec.Value)
	s.mu.Unlock()
	s.revokeC <- sec.Value
	return nil
}

// watchingSource adds the Watcher capability: Watch hands the test its
// changed callback.
type watchingSource struct {
	*fakeSource
	watching chan func()
}

func (s watchingSource) Watch(ctx context.Context, changed func()) error {
	s.watching <- changed
	<-ctx.Done()
	return nil
}

// renewingSource adds the Renewer capability; renew decides the result.
type renewingSource struct {
	*fakeSource
	renews atomic.Int64
	renew  func(s *Secret) (*Secret, error)
}

func (s *renewingSource) Renew(ctx context.Context, sec *Secret) (*Secret, error) {
	s.renews.Add(1)
	return s.renew(sec)
}

// tokens returns a Fetch function minting "tok-N", valid for life from the
// fake clock's now (forever when life is zero).
func tokens(c *fakeClock, life time.Duration) func(int64) (*Secret, error) {
	return func(n int64) (*Secret, error) {
		s := &Secret{Value: fmt.Sprintf("tok-%d", n)}
		if life > 0 {
			now := c.Now()
			s.IssuedAt, s.ExpiresAt = now, now.Add(life)
		}
		return s, nil
	}
}

// constant returns a Fetch function that always returns value, valid for
// life from now.
func constant(c *fakeClock, value string, life time.Duration) func(int64) (*Secret, error) {
	return func(int64) (*Secret, error) {
		now := c.Now()
		return &Secret{Value: value, IssuedAt: now, ExpiresAt: now.Add(life)}, nil
	}
}

var errIssuer = errors.New("issuer said no")

func failing(int64) (*Secret, error) { return nil, errIssuer }

// fakeSecrets records the values registered with it.
type fakeSecrets struct {
	mu   sync.Mutex
	live map[string]bool
	// onAdd, when set, runs inside Add.
	onAdd func(values []string)
}

func newFakeSecrets() *fakeSecrets { return &fakeSecrets{live: map[string]bool{}} }

func (f *fakeSecrets) Add(values ...string) {
	if f.onAdd != nil {
		f.onAdd(values)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range values {
		f.live[v] = true
	}
}

func (f *fakeSecrets) Remove(values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range values {
		delete(f.live, v)
	}
}

func (f *fakeSecrets) has(v string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[v]
}

func (f *fakeSecrets) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

// newTestHolder returns a holder on a fake clock, refreshing when a third of
// a lifetime is left, with jitter fixed at zero and logs captured.
func newTestHolder(src Source) (*Holder, *fakeClock, *test.Hook) {
	clk := newFakeClock()
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	h := &Holder{Name: "api", SourceName: "fake", Source: src, Clock: clk, Log: log,
		RefreshBefore: config.RefreshBefore{Fraction: 1.0 / 3}}
	h.random = func() float64 { return 0 }
	return h, clk, hook
}

// start runs h until the test ends.
func start(t *testing.T, h *Holder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Error("Run did not return after cancel")
		}
	})
}

// eventually polls cond until it holds or waitLimit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(waitLimit)
	defer limit.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-limit.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// acquireNumber is the version Acquire hands out, or 0 when it fails.
func acquireNumber(h *Holder) uint64 {
	v, err := h.Acquire()
	if err != nil {
		return 0
	}
	defer v.Release()
	return v.Number()
}

func mustAcquire(t *testing.T, h *Holder) *Version {
	t.Helper()
	v, err := h.Acquire()
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return v
}

func TestHolderFirstFetch(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(src)
	src.set(tokens(clk, time.Minute))

	if _, err := h.Acquire(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Acquire before the first fetch: %v, want ErrUnavailable", err)
	}
	if st := h.Status(); st.State != StateRefreshing || st.Version != 0 {
		t.Errorf("status before the first fetch: %+v", st)
	}
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))

	v := mustAcquire(t, h)
	defer v.Release()
	if v.Number() != 1 || v.Secret().Value != "tok-1" || len(v.Fingerprint()) != fingerprintLen {
		t.Errorf("version %d %q %q", v.Number(), v.Secret().Value, v.Fingerprint())
	}
	want := Status{
		Name: "api", Source: "fake", Version: 1, Fingerprint: v.Fingerprint(), State: StateFresh,
		IssuedAt: epoch, ExpiresAt: epoch.Add(time.Minute), NextRefresh: epoch.Add(40 * time.Second),
		Rotations: 1,
	}
	if st := h.Status(); st != want {
		t.Errorf("status\n got %+v\nwant %+v", st, want)
	}
}

func TestHolderFirstFetchRetriesUntilItSucceeds(t *testing.T) {
	src := newFakeSource(failing)
	h, clk, _ := newTestHolder(src)
	start(t, h)

	clk.WaitTimer(t, epoch.Add(time.Second))
	st := h.Status()
	if st.State != StateFailed || !strings.Contains(st.LastError, errIssuer.Error()) || st.Rotations != 0 {
		t.Errorf("status after a failed first fetch: %+v", st)
	}
	if _, err := h.Acquire(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire: %v, want ErrUnavailable", err)
	}
	clk.Advance(time.Second)
	clk.WaitTimer(t, epoch.Add(3*time.Second)) // backoff doubled
	src.set(tokens(clk, 0))
	clk.Advance(2 * time.Second)
	eventually(t, "a value", func() bool { return acquireNumber(h) == 1 })
	st = h.Status()
	if st.State != StateFresh || st.LastError != "" || !st.NextRefresh.IsZero() || !st.ExpiresAt.IsZero() {
		t.Errorf("status after recovery: %+v", st)
	}
	if n := src.fetches.Load(); n != 3 {
		t.Errorf("%d fetches, want 3", n)
	}
}

func TestHolderRefreshesAheadOfExpiry(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, hook := newTestHolder(src)
	src.set(tokens(clk, time.Minute))
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))
	held := mustAcquire(t, h)

	clk.Advance(40 * time.Second)
	eventually(t, "version 2", func() bool { return acquireNumber(h) == 2 })
	if held.Number() != 1 || held.Secret().Value != "tok-1" {
		t.Errorf("the held version changed under the request: %d %q", held.Number(), held.Secret().Value)
	}
	held.Release()
	v := mustAcquire(t, h)
	defer v.Release()
	if v.Secret().Value != "tok-2" || v.Fingerprint() == held.Fingerprint() {
		t.Errorf("version 2 is %q, fingerprint %q", v.Secret().Value, v.Fingerprint())
	}
	st := h.Status()
	if st.Rotations != 2 || !st.ExpiresAt.Equal(epoch.Add(100*time.Second)) || !st.NextRefresh.Equal(epoch.Add(80*time.Second)) {
		t.Errorf("status: %+v", st)
	}

	var rotated []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Message == "credential rotated" {
			rotated = append(rotated, e)
		}
	}
	if len(rotated) != 2 {
		t.Fatalf("%d rotation lines, want 2", len(rotated))
	}
	want := logrus.Fields{
		"credential": "api", "old_version": uint64(1), "new_version": uint64(2),
		"expires_at": "2030-01-01T00:01:40Z",
	}
	if got := rotated[1].Data; fmt.Sprint(got) != fmt.Sprint(want) || rotated[1].Level != logrus.InfoLevel {
		t.Errorf("rotation line %v %v, want %v", rotated[1].Level, got, want)
	}
	if got := rotated[0].Data["old_version"]; got != uint64(0) {
		t.Errorf("first rotation old_version = %v", got)
	}
}

func TestHolderSameValueIsNotANewVersion(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, hook := newTestHolder(src)
	src.set(constant(clk, "same", time.Minute))
	var results []string
	var mu sync.Mutex
	h.OnRotate = func(name, result string) {
		mu.Lock()
		defer mu.Unlock()
		results = append(results, name+":"+result)
	}
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))
	old := mustAcquire(t, h)
	defer old.Release()

	clk.Advance(40 * time.Second)
	clk.WaitTimer(t, epoch.Add(80*time.Second))
	st := h.Status()
	if st.Version != 1 || st.Rotations != 1 || st.Fingerprint != old.Fingerprint() || !st.ExpiresAt.Equal(epoch.Add(100*time.Second)) {
		t.Errorf("status after a same-value refresh: %+v", st)
	}
	v := mustAcquire(t, h)
	defer v.Release()
	if v.Number() != 1 || !v.Secret().ExpiresAt.Equal(epoch.Add(100*time.Second)) {
		t.Errorf("refreshed version %d expires %v", v.Number(), v.Secret().ExpiresAt)
	}
	if !old.Secret().ExpiresAt.Equal(epoch.Add(time.Minute)) {
		t.Error("the held version was modified")
	}
	n := 0
	for _, e := range hook.AllEntries() {
		if e.Message == "credential rotated" {
			n++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 || !slices.Equal(results, []string{"api:success"}) {
		t.Errorf("%d rotation lines, OnRotate %v; want 1 and one success", n, results)
	}
}

func TestHolderSourceVersions(t *testing.T) {
	src := newFakeSource(nil)
	h, _, _ := newTestHolder(src)
	ctx := context.Background()
	for _, step := range []struct {
		value     string
		version   uint64
		want      uint64
		rotations uint64
	}{
		{"a", 7, 7, 1},
		{"a", 7, 7, 1}, // same value, same version
		{"a", 8, 8, 2}, // same value rewritten: a new version
		{"b", 0, 1, 3}, // no source version: the holder counts
	} {
		src.set(func(int64) (*Secret, error) { return &Secret{Value: step.value, Version: step.version}, nil })
		if err := h.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if st := h.Status(); st.Version != step.want || st.Rotations != step.rotations {
			t.Errorf("%s/%d: version %d, rotations %d; want %d, %d", step.value, step.version, st.Version, st.Rotations, step.want, step.rotations)
		}
	}
}

func TestHolderKeepsValueWhileSourceFails(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, hook := newTestHolder(src)
	h.MaxStale = 10 * time.Second
	h.RetryMin, h.RetryMax = 30*time.Second, 30*time.Second
	var failures atomic.Int64
	h.OnRotate = func(_, result string) {
		if result == "failure" {
			failures.Add(1)
		}
	}
	src.set(tokens(clk, time.Minute))
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))

	src.set(failing)
	clk.Advance(40 * time.Second) // T+40: fails; retry at expiry, not T+70
	clk.WaitTimer(t, epoch.Add(60*time.Second))
	if st := h.Status(); st.State != StateRefreshing || !strings.Contains(st.LastError, "issuer said no") {
		t.Errorf("status after a failed refresh: %+v", st)
	}
	if acquireNumber(h) != 1 {
		t.Error("the current value must stay in use while the source fails")
	}
	clk.Advance(20 * time.Second) // T+60: fails again; retry at T+90
	clk.WaitTimer(t, epoch.Add(90*time.Second))

	clk.Advance(5 * time.Second) // T+65: stale, still served
	if st := h.Status(); st.State != StateStale {
		t.Errorf("state %s, want stale", st.State)
	}
	if acquireNumber(h) != 1 {
		t.Error("a stale value within max_stale must be served")
	}
	clk.Advance(6 * time.Second) // T+71: past expiry + max_stale
	if st := h.Status(); st.State != StateExpired {
		t.Errorf("state %s, want expired", st.State)
	}
	_, err := h.Acquire()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), `"api"`) {
		t.Errorf("Acquire past expiry + max_stale: %v", err)
	}

	src.set(tokens(clk, time.Minute))
	clk.Advance(19 * time.Second) // T+90: recovers
	eventually(t, "recovery", func() bool { return acquireNumber(h) == 2 })
	if st := h.Status(); st.State != StateFresh || st.LastError != "" {
		t.Errorf("status after recovery: %+v", st)
	}
	if n := failures.Load(); n != 2 {
		t.Errorf("%d failures reported, want 2", n)
	}
	var warned bool
	for _, e := range hook.AllEntries() {
		if e.Message == "credential fetch failed" {
			warned = true
			if e.Level != logrus.WarnLevel || e.Data["credential"] != "api" || e.Data["retry_in"] == nil || e.Data[logrus.ErrorKey] == nil {
				t.Errorf("failure line %v %v", e.Level, e.Data)
			}
		}
	}
	if !warned {
		t.Error("no failure line")
	}
}

func TestHolderRevokesOnlyAfterRelease(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(revokingSource{src})
	h.RevokeOld = true
	secrets := newFakeSecrets()
	h.Secrets = secrets
	src.set(tokens(clk, time.Minute))
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))
	held := mustAcquire(t, h)

	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.WaitTimer(t, epoch.Add(30*time.Second)) // the reaper waits for the grace
	if got := src.revokedValues(); len(got) != 0 {
		t.Fatalf("revoked %v while a request holds it", got)
	}
	if !secrets.has("tok-1") || !secrets.has("tok-2") {
		t.Error("both values must be registered while both may be in use")
	}

	held.Release()
	if got := <-src.revokeC; got != "tok-1" {
		t.Errorf("revoked %q, want tok-1", got)
	}
	eventually(t, "tok-1 unregistered", func() bool { return !secrets.has("tok-1") })
	if !secrets.has("tok-2") {
		t.Error("the current value was unregistered")
	}

	// At exit, only the current value is left to revoke, once.
	for range 2 {
		if err := h.Revoke(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := src.revokedValues(); !slices.Equal(got, []string{"tok-1", "tok-2"}) {
		t.Errorf("revoked %v, want each value once", got)
	}
	if _, err := h.Acquire(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire after Revoke: %v", err)
	}
	if err := h.Refresh(context.Background()); err == nil {
		t.Error("Refresh after Revoke succeeded")
	}
}

func TestHolderRevokesAfterGraceIfNeverReleased(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(revokingSource{src})
	h.RevokeOld = true
	h.RevokeGrace = 10 * time.Second
	secrets := newFakeSecrets()
	h.Secrets = secrets
	src.set(tokens(clk, time.Hour))
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Minute))
	held := mustAcquire(t, h)
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.WaitTimer(t, epoch.Add(10*time.Second))
	clk.Advance(10 * time.Second)
	if got := <-src.revokeC; got != "tok-1" {
		t.Errorf("revoked %q, want tok-1", got)
	}
	if !secrets.has("tok-1") {
		t.Error("a value still held must stay registered after its revocation")
	}
	held.Release()
	eventually(t, "tok-1 unregistered", func() bool { return !secrets.has("tok-1") })
	if err := h.Revoke(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := src.revokedValues(); !slices.Equal(got, []string{"tok-1", "tok-2"}) {
		t.Errorf("revoked %v, want each value once", got)
	}
}

func TestHolderDoesNotRevokeWithoutRevokeOld(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(revokingSource{src})
	src.set(tokens(clk, time.Hour))
	ctx := context.Background()
	for range 3 {
		if err := h.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := src.revokedValues(); len(got) != 0 {
		t.Errorf("revoked %v without revoke_old", got)
	}
	// At exit everything still valid that this process created goes.
	if err := h.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	got := src.revokedValues()
	slices.Sort(got)
	if !slices.Equal(got, []string{"tok-1", "tok-2", "tok-3"}) {
		t.Errorf("revoked at exit %v", got)
	}
}

func TestHolderRefreshIsShared(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			src := newFakeSource(tokens(nil, 0))
			if fail {
				src.set(failing)
			}
			h, _, _ := newTestHolder(src)
			const n = 20
			var joined atomic.Int64
			h.afterJoin = func() { joined.Add(1) }
			gate, started := src.gated()

			errs := make(chan error, n)
			for range n {
				go func() { errs <- h.Refresh(context.Background()) }()
			}
			<-started
			eventually(t, "every caller joined", func() bool { return joined.Load() == n })
			gate <- struct{}{}
			for range n {
				err := <-errs
				if fail != errors.Is(err, errIssuer) || (!fail && err != nil) {
					t.Errorf("Refresh: %v", err)
				}
			}
			if got := src.fetches.Load(); got != 1 {
				t.Errorf("%d fetches for %d concurrent refreshes, want 1", got, n)
			}
		})
	}
}

func TestHolderRefreshAfter(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(src)
	src.set(tokens(clk, time.Hour))
	ctx := context.Background()
	if err := h.RefreshAfter(ctx, nil); err != nil {
		t.Fatal(err)
	}
	v1 := mustAcquire(t, h)
	v1.Release()
	if err := h.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.RefreshAfter(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if got := src.fetches.Load(); got != 2 {
		t.Errorf("a 401 seen with a superseded version refetched: %d fetches, want 2", got)
	}
	v2 := mustAcquire(t, h)
	v2.Release()
	if err := h.RefreshAfter(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if got, want := src.fetches.Load(), int64(3); got != want || acquireNumber(h) != 3 {
		t.Errorf("a 401 with the current version: %d fetches, version %d", got, acquireNumber(h))
	}
}

func TestHolderWatchTriggersFetches(t *testing.T) {
	src := newFakeSource(nil)
	ws := watchingSource{src, make(chan func(), 1)}
	h, clk, _ := newTestHolder(ws)
	h.RefreshEvery = time.Hour // the loop arms this timer whenever idle
	src.set(tokens(clk, 0))
	start(t, h)
	changed := <-ws.watching
	idle := epoch.Add(time.Hour)
	clk.WaitTimer(t, idle)

	gate, started := src.gated()
	changed()
	if n := <-started; n != 2 {
		t.Fatalf("fetch %d on a watch signal, want 2", n)
	}
	for range 5 { // a burst during the fetch
		changed()
	}
	gate <- struct{}{}
	if n := <-started; n != 3 {
		t.Fatalf("fetch %d after the burst, want 3", n)
	}
	gate <- struct{}{}
	clk.WaitTimer(t, idle)
	if n := src.fetches.Load(); n != 3 {
		t.Errorf("%d fetches, want 3: a burst during a fetch is one more fetch", n)
	}
	if acquireNumber(h) != 3 {
		t.Errorf("version %d, want 3", acquireNumber(h))
	}
}

func TestHolderRenews(t *testing.T) {
	src := newFakeSource(nil)
	rs := &renewingSource{fakeSource: src}
	h, clk, _ := newTestHolder(rs)
	src.set(tokens(clk, time.Minute))
	rs.renew = func(s *Secret) (*Secret, error) {
		r := *s
		r.IssuedAt, r.ExpiresAt = clk.Now(), clk.Now().Add(time.Minute)
		return &r, nil
	}
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))
	clk.Advance(40 * time.Second)
	clk.WaitTimer(t, epoch.Add(80*time.Second))
	if st := h.Status(); st.Version != 1 || st.Rotations != 1 || !st.ExpiresAt.Equal(epoch.Add(100*time.Second)) {
		t.Errorf("status after a renewal: %+v", st)
	}
	// A renewal that does not extend the lease (max TTL reached) falls
	// back to a new value.
	rs.renew = func(s *Secret) (*Secret, error) { return s, nil }
	clk.Advance(40 * time.Second)
	eventually(t, "version 2", func() bool { return acquireNumber(h) == 2 })
	if r, f := rs.renews.Load(), src.fetches.Load(); r != 2 || f != 2 {
		t.Errorf("%d renewals, %d fetches; want 2, 2", r, f)
	}
}

func TestHolderSecrets(t *testing.T) {
	src := newFakeSource(nil)
	h, _, _ := newTestHolder(src)
	secrets := newFakeSecrets()
	h.Secrets = secrets
	secrets.onAdd = func(values []string) {
		if v, err := h.Acquire(); err == nil {
			defer v.Release()
			if slices.Contains(values, v.Secret().Value) {
				t.Error("a value was stored before it was registered")
			}
		}
	}
	src.set(func(n int64) (*Secret, error) {
		return &Secret{Value: fmt.Sprintf("tok-%d", n), Fields: map[string]string{"username": "svc"}}, nil
	})
	ctx := context.Background()
	for range 20 {
		if err := h.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Never-expiring values that nothing holds: the current one and the
	// last maxIdleRetired superseded ones, plus the shared user name.
	if got, want := secrets.count(), 1+maxIdleRetired+1; got != want {
		t.Errorf("%d values registered, want %d", got, want)
	}
	for _, v := range []string{"svc", "tok-20", "tok-12"} {
		if !secrets.has(v) {
			t.Errorf("%s not registered", v)
		}
	}
	if secrets.has("tok-11") {
		t.Error("tok-11 still registered")
	}
	if n := len(h.retired); n != maxIdleRetired {
		t.Errorf("%d superseded values tracked, want %d", n, maxIdleRetired)
	}
}

// A value that is neither revoked nor expiring has nothing waiting on its
// drain: superseding it and releasing it leave the reaper asleep, and the
// registered values stay bounded by the prune at each rotation. An expiring
// value still wakes the reaper.
func TestHolderStaticValueWakesNoReaper(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(src)
	secrets := newFakeSecrets()
	h.Secrets = secrets
	src.set(tokens(clk, 0))
	ctx := context.Background()
	if err := h.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		v := mustAcquire(t, h) // held across the rotation, released after
		if err := h.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		v.Release()
		if n := len(h.reapC); n != 0 {
			t.Fatalf("static value %d: the reaper was woken", v.Number())
		}
	}
	if got, most := secrets.count(), 2+maxIdleRetired; got > most {
		t.Errorf("%d values registered, want at most %d", got, most)
	}

	src.set(tokens(clk, time.Hour))
	if err := h.Refresh(ctx); err != nil { // supersedes a static value
		t.Fatal(err)
	}
	if len(h.reapC) != 0 {
		t.Fatal("superseding a static value woke the reaper")
	}
	v := mustAcquire(t, h)
	if err := h.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if len(h.reapC) != 1 {
		t.Fatal("superseding an expiring value did not wake the reaper")
	}
	<-h.reapC
	v.Release()
	if len(h.reapC) != 1 {
		t.Error("draining a superseded expiring value did not wake the reaper")
	}
}

func TestHolderUnregistersExpiredValues(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(src)
	secrets := newFakeSecrets()
	h.Secrets = secrets
	src.set(tokens(clk, time.Minute))
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))
	clk.Advance(40 * time.Second)
	clk.WaitTimer(t, epoch.Add(60*time.Second)) // the reaper waits for tok-1's expiry
	if !secrets.has("tok-1") || !secrets.has("tok-2") {
		t.Fatal("a superseded value must stay registered until it expires")
	}
	clk.Advance(20 * time.Second)
	eventually(t, "tok-1 unregistered", func() bool { return !secrets.has("tok-1") })
	if !secrets.has("tok-2") {
		t.Error("the current value was unregistered")
	}
}

func TestHolderLogsNoSecret(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, hook := newTestHolder(revokingSource{src})
	h.RevokeOld = true
	src.set(func(n int64) (*Secret, error) {
		return &Secret{Value: fmt.Sprintf("s3cr3t-value-%d", n), Fields: map[string]string{"password": "hunter2-pass"},
			ExpiresAt: clk.Now().Add(time.Minute)}, nil
	})
	start(t, h)
	clk.WaitTimer(t, epoch.Add(40*time.Second))
	src.set(failing)
	clk.Advance(40 * time.Second)
	clk.WaitTimer(t, epoch.Add(41*time.Second))
	src.set(constant(clk, "s3cr3t-other", time.Minute))
	clk.Advance(time.Second)
	eventually(t, "a rotation", func() bool { return acquireNumber(h) == 2 })
	if err := h.Revoke(context.Background()); err != nil {
		t.Fatal(err)
	}

	entries := hook.AllEntries()
	if len(entries) < 4 {
		t.Fatalf("only %d log lines", len(entries))
	}
	for _, e := range entries {
		line, err := e.String()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, "s3cr3t") || strings.Contains(line, "hunter2") {
			t.Errorf("log line holds a secret: %s", line)
		}
	}
	st := fmt.Sprintf("%+v", h.Status())
	if strings.Contains(st, "s3cr3t") {
		t.Errorf("status holds a secret: %s", st)
	}
}

func TestHolderRunTwice(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(src)
	src.set(tokens(clk, 0))
	start(t, h)
	eventually(t, "running", func() bool { return h.running.Load() })
	if err := h.Run(context.Background()); err == nil {
		t.Error("a second concurrent Run succeeded")
	}
}

func TestHolderZeroValue(t *testing.T) {
	h := &Holder{Name: "zero", Source: newFakeSource(tokens(nil, 0))}
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := mustAcquire(t, h)
	defer v.Release()
	if v.Secret().IssuedAt.IsZero() || len(v.Fingerprint()) != fingerprintLen {
		t.Errorf("zero-value holder: issued %v, fingerprint %q", v.Secret().IssuedAt, v.Fingerprint())
	}
	if st := h.Status(); st.State != StateFresh || st.Version != 1 {
		t.Errorf("status %+v", st)
	}
	empty := &Holder{Name: "none"}
	if err := empty.Refresh(context.Background()); err == nil {
		t.Error("a holder without a source refreshed")
	}
}

func TestHolderAcquireRaceWithSwap(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(revokingSource{src})
	h.RevokeOld = true
	src.set(tokens(clk, 0))
	ctx := context.Background()
	if err := h.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Requests check that the value they hold was not revoked under them.
	var revoked sync.Map
	go func() {
		for v := range src.revokeC {
			revoked.Store(v, true)
		}
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := h.Acquire()
				if err != nil {
					t.Error(err)
					return
				}
				if _, ok := revoked.Load(v.Secret().Value); ok {
					t.Errorf("acquired %s after its revocation", v.Secret().Value)
				}
				v.Release()
			}
		})
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go h.reap(runCtx)
	for range 200 {
		if err := h.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func BenchmarkAcquireRelease(b *testing.B) {
	h := benchHolder(b)
	b.ReportAllocs()
	for b.Loop() {
		v, err := h.Acquire()
		if err != nil {
			b.Fatal(err)
		}
		v.Release()
	}
}

func BenchmarkAcquireReleaseParallel(b *testing.B) {
	h := benchHolder(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v, err := h.Acquire()
			if err != nil {
				b.Error(err)
				return
			}
			v.Release()
		}
	})
}

func benchHolder(b *testing.B) *Holder {
	h := &Holder{Name: "bench", MaxStale: time.Minute, Source: newFakeSource(func(int64) (*Secret, error) {
		return &Secret{Value: "tok", ExpiresAt: time.Now().Add(time.Hour)}, nil
	})}
	if err := h.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	return h
}

func TestAcquireReleaseDoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation count")
	}
	h := &Holder{Name: "a", Source: newFakeSource(tokens(nil, 0)), RefreshBefore: config.RefreshBefore{Fraction: 0.5}}
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		v, _ := h.Acquire()
		v.Release()
	}); n != 0 {
		t.Errorf("Acquire+Release: %v allocations", n)
	}
	empty := &Holder{Name: "b"}
	if n := testing.AllocsPerRun(1000, func() { _, _ = empty.Acquire() }); n != 0 {
		t.Errorf("failing Acquire: %v allocations", n)
	}
}

func TestInFlightCountsEveryHeldValue(t *testing.T) {
	h := &Holder{Name: "c", Source: &EnvSource{Name: "X", Lookup: func(string) (string, bool) { return "v1", true }}}
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, err := h.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := h.Acquire()
	if n := h.InFlight(); n != 2 {
		t.Fatalf("InFlight = %d, want 2", n)
	}
	a.Release()
	b.Release()
	if n := h.InFlight(); n != 0 {
		t.Fatalf("InFlight = %d after release, want 0", n)
	}
}

// A request that saw its version fail checks that the version is still
// current, then joins or starts a flight; another request's refresh may
// complete in between. The flight it then starts must fetch nothing.
func TestHolderRefreshAfterRaceWithCompletedRefresh(t *testing.T) {
	src := newFakeSource(nil)
	h, clk, _ := newTestHolder(src)
	src.set(tokens(clk, time.Hour))
	ctx := context.Background()
	if err := h.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	v1 := mustAcquire(t, h)
	v1.Release()
	if err := h.RefreshAfter(ctx, v1); err != nil { // the first request's refresh
		t.Fatal(err)
	}
	// The second request passed its check before that refresh completed.
	if err := h.refresh(ctx, flightFetch, v1.lease); err != nil {
		t.Fatal(err)
	}
	if got := src.fetches.Load(); got != 2 {
		t.Errorf("%d fetches, want 2: one shared refresh for one failed version", got)
	}
}
