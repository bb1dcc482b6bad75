package telemetry

import (
	"testing"
	"time"
)

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
