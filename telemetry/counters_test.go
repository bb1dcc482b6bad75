package telemetry

import (
	"sync/atomic"
	"testing"
	"time"
)

// OnCallerRefused sees every refusal counted, with its reason, and only
// those: other families are not observed.
func TestOnCallerRefused(t *testing.T) {
	m := newTestMetrics(t, time.Now())
	host, unauth := m.CallersRefused("host_not_allowed"), m.CallersRefused("caller_unauthenticated")
	scrubbed := m.SecretsScrubbed("api")
	host.Inc() // before an observer: counted, not seen

	var seen []string
	m.OnCallerRefused(func(reason string) { seen = append(seen, reason) })
	host.Inc()
	unauth.Add(2)
	unauth.Add(0)
	scrubbed.Inc()
	if want := []string{"host_not_allowed", "caller_unauthenticated"}; len(seen) != 2 || seen[0] != want[0] || seen[1] != want[1] {
		t.Errorf("observer saw %q, want %q", seen, want)
	}
	if host.Value() != 2 || unauth.Value() != 2 || scrubbed.Value() != 1 {
		t.Errorf("counts %d %d %d, want 2 2 1", host.Value(), unauth.Value(), scrubbed.Value())
	}
	if m.CallersRefused("host_not_allowed") != host {
		t.Error("a second CallersRefused returned another counter")
	}

	m.OnCallerRefused(nil)
	host.Inc()
	if len(seen) != 2 {
		t.Errorf("observer called after it was removed: %q", seen)
	}
}

// Inc stays allocation-free with an observer set, and without one.
func TestObservedIncAllocatesNothing(t *testing.T) {
	m := newTestMetrics(t, time.Now())
	c := m.CallersRefused("cross_origin_refused")
	if n := testing.AllocsPerRun(1000, c.Inc); n != 0 {
		t.Errorf("Inc without an observer: %v allocations, want 0", n)
	}
	var calls atomic.Int64
	m.OnCallerRefused(func(string) { calls.Add(1) })
	if n := testing.AllocsPerRun(1000, c.Inc); n != 0 {
		t.Errorf("Inc with an observer: %v allocations, want 0", n)
	}
	if calls.Load() < 1000 {
		t.Errorf("observer called %d times, want at least 1000", calls.Load())
	}
}

func BenchmarkObservedInc(b *testing.B) {
	clearOTelEnv(b)
	m, err := NewMetrics(MetricsOptions{ServiceName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	c := m.CallersRefused("host_not_allowed")
	m.OnCallerRefused(func(string) {})
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}

// TestForwardConnects: sidekey_forward_connects_total has its three
// series from the moment the listener asks for them, and counts each.
func TestForwardConnects(t *testing.T) {
	m := newTestMetrics(t, time.Now())
	results := []string{ForwardIntercepted, ForwardTunnelled, ForwardRefused}
	for _, r := range results {
		m.ForwardConnects(r)
	}
	if m.ForwardConnects(ForwardRefused) != m.ForwardConnects(ForwardRefused) {
		t.Error("ForwardConnects is not memoised")
	}
	fams, text := scrape(t, m)
	for _, r := range results {
		if v := series(t, fams, "sidekey_forward_connects_total", map[string]string{"result": r}).GetCounter().GetValue(); v != 0 {
			t.Errorf("%s at start: %v, want 0", r, v)
		}
	}
	m.ForwardConnects(ForwardIntercepted).Inc()
	m.ForwardConnects(ForwardRefused).Add(2)
	fams, text = scrape(t, m)
	for r, want := range map[string]float64{ForwardIntercepted: 1, ForwardTunnelled: 0, ForwardRefused: 2} {
		if v := series(t, fams, "sidekey_forward_connects_total", map[string]string{"result": r}).GetCounter().GetValue(); v != want {
			t.Errorf("%s: %v, want %v\n%s", r, v, want, text)
		}
	}
}
