package telemetry

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Counter is one series of a labelled counter family: an atomic count,
// read only when a reader collects. Inc and Add take no lock and allocate
// nothing; in an observed family they also tell its observer, when one is
// set, at the cost of one more atomic load.
type Counter struct {
	attrs attribute.Set
	n     atomic.Uint64
	obs   *observer // nil outside an observed family
	label string    // the series' label value, for obs
}

// Inc adds one.
func (c *Counter) Inc() {
	c.n.Add(1)
	if c.obs != nil {
		c.obs.notify(c.label)
	}
}

// Add adds n.
func (c *Counter) Add(n uint64) {
	c.n.Add(n)
	if c.obs != nil && n > 0 {
		c.obs.notify(c.label)
	}
}

// observer holds the function an observed family's counters call with
// their label value on every increment.
type observer struct{ f atomic.Pointer[func(string)] }

func (o *observer) notify(label string) {
	if f := o.f.Load(); f != nil {
		(*f)(label)
	}
}

// Value is the count so far.
func (c *Counter) Value() uint64 { return c.n.Load() }

// family is a counter with one label, each of whose series exists, at 0,
// from the moment it is first asked for.
type family struct {
	name, unit, desc string
	label            attribute.Key
}

// The labelled counter families. Their names become the Prometheus names
// as the other instruments' do (see the instrument names in metrics.go).
var (
	familyCallersRefused = family{"sidekey.callers.refused", unitRequests,
		"Requests refused before any credential was used, by reason (host_not_allowed, cross_origin_refused, caller_unauthenticated, caller_not_allowed).",
		attribute.Key("reason")}
	familySecretsScrubbed = family{"sidekey.secrets.scrubbed", "{value}",
		"Live secret values masked in responses, by route: echoed by the upstream in a header, or in a text body with scrub_body.",
		attribute.Key("route")}
	familyForwardConnects = family{"sidekey.forward.connects", unitRequests,
		"Requests on the forward-proxy listener (CONNECT and absolute-form), by what became of them: intercepted, tunnelled or refused.",
		attribute.Key("result")}
	families = []family{familyCallersRefused, familySecretsScrubbed, familyForwardConnects}
)

// CallersRefused returns the series of sidekey_callers_refused_total for
// reason, creating it at 0. Call it when the proxy is built, not per
// request; later calls with the same reason return the same Counter.
func (m *Metrics) CallersRefused(reason string) *Counter {
	return m.counter(familyCallersRefused, reason)
}

// OnCallerRefused has f called with the reason of every request counted in
// sidekey_callers_refused_total, from the goroutine that refused it, so
// refusals can be reported as events without the proxy knowing of them. f
// runs on the request path: it must not block, and should not allocate for
// each call (rate-limit first). nil removes it. Safe to call at any time.
func (m *Metrics) OnCallerRefused(f func(reason string)) {
	if f == nil {
		m.refusedObs.f.Store(nil)
		return
	}
	m.refusedObs.f.Store(&f)
}

// SecretsScrubbed returns the series of sidekey_secrets_scrubbed_total for
// a route, creating it at 0.
func (m *Metrics) SecretsScrubbed(route string) *Counter {
	return m.counter(familySecretsScrubbed, route)
}

// Results of sidekey_forward_connects_total.
const (
	ForwardIntercepted = "intercepted"
	ForwardTunnelled   = "tunnelled"
	ForwardRefused     = "refused"
)

// ForwardConnects returns the series of sidekey_forward_connects_total for
// result (ForwardIntercepted, ForwardTunnelled, ForwardRefused), creating
// it at 0. Call it when the forward listener is built, not per request.
func (m *Metrics) ForwardConnects(result string) *Counter {
	return m.counter(familyForwardConnects, result)
}

func (m *Metrics) counter(f family, value string) *Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := familyKey{f.name, value}
	if c, ok := m.counters[key]; ok {
		return c
	}
	c := &Counter{attrs: attribute.NewSet(f.label.String(value))}
	if f.name == familyCallersRefused.name {
		c.obs, c.label = &m.refusedObs, value
	}
	m.counters[key] = c
	return c
}

type familyKey struct{ family, value string }

// counterMetrics is every family's data, cumulative since start-up, its
// series sorted by label value.
func (m *Metrics) counterMetrics(now time.Time) []metricdata.Metrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	byFamily := map[string][]familyKey{}
	for k := range m.counters {
		byFamily[k.family] = append(byFamily[k.family], k)
	}
	var out []metricdata.Metrics
	for _, f := range families {
		keys := byFamily[f.name]
		if len(keys) == 0 {
			continue
		}
		slices.SortFunc(keys, func(a, b familyKey) int { return strings.Compare(a.value, b.value) })
		sum := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
		for _, k := range keys {
			c := m.counters[k]
			sum.DataPoints = append(sum.DataPoints, metricdata.DataPoint[int64]{
				Attributes: c.attrs, StartTime: m.start, Time: now, Value: int64(c.n.Load())})
		}
		out = append(out, metricdata.Metrics{Name: f.name, Unit: f.unit, Description: f.desc, Data: sum})
	}
	return out
}
