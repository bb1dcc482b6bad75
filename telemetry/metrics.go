package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// RouteNone is the route label of requests that matched no route.
const RouteNone = "none"

// Rotation results, as Holder.OnRotate reports them.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
)

// Metric attribute keys; Prometheus shows them as the labels of the same name.
const (
	attrRoute       = attribute.Key("route")
	attrCode        = attribute.Key("code")
	attrCredential  = attribute.Key("credential")
	attrResult      = attribute.Key("result")
	attrCertificate = attribute.Key("certificate")
)

// Instrument names follow OpenTelemetry conventions (dots, a unit apart);
// the Prometheus exporter turns them into the documented names by
// replacing dots with underscores and appending the unit ("_seconds") and,
// for monotonic counters, "_total". TestMetricsExposition pins the result.
const (
	nameRequests        = "sidekey.requests"             // sidekey_requests_total
	nameRequestDuration = "sidekey.request.duration"     // sidekey_request_duration_seconds
	nameUpstream        = "sidekey.upstream.duration"    // sidekey_upstream_duration_seconds
	nameRotations       = "sidekey.credential.rotations" // sidekey_credential_rotations_total
	nameCredExpiry      = "sidekey.credential.expiry"    // sidekey_credential_expiry_seconds
	nameCredAge         = "sidekey.credential.age"       // sidekey_credential_age_seconds
	nameCertExpiry      = "sidekey.certificate.expiry"   // sidekey_certificate_expiry_seconds
	nameInflight        = "sidekey.inflight_requests"    // sidekey_inflight_requests
	nameAuditDropped    = "sidekey.audit.lines_dropped"  // sidekey_audit_lines_dropped_total
	instrumentationName = "github.com/sidekey/sidekey"   // the meter's and tracer's scope
	unitSeconds         = "s"                            // becomes the "_seconds" suffix
	unitRequests        = "{request}"                    // annotations add no suffix
	unitRotations       = "{rotation}"                   // annotations add no suffix
	unitLines           = "{line}"                       // annotations add no suffix
)

// DurationBuckets are the histogram bounds, in seconds, of both request
// durations. A sidecar on loopback answers in well under a millisecond of
// its own time; third-party APIs take up to seconds, and streamed bodies
// (downloads, server-sent events) longer, hence the tail to one minute.
var DurationBuckets = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

// Status codes outside [codeMin, codeMax] count under code="other": the
// label set stays bounded whatever an upstream sends.
const (
	codeMin   = 100
	codeMax   = 599
	codeOther = "other"
)

// MetricsOptions configures NewMetrics. The zero value is usable.
type MetricsOptions struct {
	// ServiceName is the resource's service.name; "" means the
	// OTEL_SERVICE_NAME variable, else "sidekey".
	ServiceName string
	// OTLPEndpoint, when set, also pushes metrics over OTLP, following the
	// same endpoint rules as TracingOptions.OTLPEndpoint. "" means the
	// OTEL_EXPORTER_OTLP_ENDPOINT variable, else no OTLP export. The
	// interval is OTEL_METRIC_EXPORT_INTERVAL, else 60 s.
	OTLPEndpoint string
	// Now is the clock for the expiry and age gauges; nil means time.Now.
	Now func() time.Time
}

// Metrics holds sidekey's instruments. They are exported in the Prometheus
// text format by Handler, from a registry of its own, and, when an endpoint
// is configured, over OTLP.
//
// All methods are safe for concurrent use. The request path
// (RouteMetrics.Observe, InflightAdd) takes no lock and allocates nothing:
// the per-request series (requests, both durations) are plain atomic
// counters, aggregated into OpenTelemetry data only when a reader collects
// (see Produce).
type Metrics struct {
	provider *sdkmetric.MeterProvider
	handler  http.Handler
	now      func() time.Time
	start    time.Time // start of the cumulative request series

	inflight     metric.Int64ObservableGauge
	rotations    metric.Int64Counter
	auditDropped metric.Int64ObservableCounter

	credExpiry metric.Float64ObservableGauge
	credAge    metric.Float64ObservableGauge
	certExpiry metric.Float64ObservableGauge

	// inflightN is InflightAdd's count and inflightF an observed one: the
	// gauge is read at collection time, so the request path pays one atomic
	// add at most.
	inflightN    atomic.Int64
	inflightF    atomic.Pointer[func() int64]
	credentials  atomic.Pointer[func() []CredentialState]
	certificates atomic.Pointer[func() []CertificateState]
	dropped      atomic.Pointer[func() uint64]
	// refusedObs is told of each caller refusal (OnCallerRefused).
	refusedObs observer

	mu           sync.Mutex
	routes       map[string]*RouteMetrics
	counters     map[familyKey]*Counter
	rotationOpts map[rotationKey]metric.AddOption

	shutdownOnce sync.Once
	shutdownErr  error
}

// NewMetrics builds the meter provider, its Prometheus registry and, when
// an OTLP endpoint is configured, a periodic OTLP exporter. It connects to
// nothing: an unreachable collector shows up later as export errors, never
// here.
func NewMetrics(opts MetricsOptions) (*Metrics, error) {
	ctx := context.Background()
	res, err := newResource(ctx, opts.ServiceName)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	prod := &producer{}
	promExporter, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithProducer(prod),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(), // no otel_scope_* labels: only the documented ones
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	providerOpts := []sdkmetric.Option{
		sdkmetric.WithResource(res),
		sdkmetric.WithReader(promExporter),
		// Observe takes no context, so no measurement could carry a span
		// for an exemplar; skipping the check saves a lookup per measurement.
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter),
	}
	if endpoint := otlpEndpoint(opts.OTLPEndpoint); endpoint != "" {
		reader, err := newOTLPMetricReader(ctx, endpoint, prod)
		if err != nil {
			return nil, err
		}
		providerOpts = append(providerOpts, sdkmetric.WithReader(reader))
	}
	m := &Metrics{
		provider: sdkmetric.NewMeterProvider(providerOpts...),
		handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		now:      opts.Now,
		routes:   map[string]*RouteMetrics{},
		counters: map[familyKey]*Counter{},

		rotationOpts: map[rotationKey]metric.AddOption{},
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.start = m.now()
	prod.m.Store(m)
	if err := m.instruments(); err != nil {
		_ = m.provider.Shutdown(ctx)
		return nil, err
	}
	return m, nil
}

// newOTLPMetricReader pushes metrics to endpoint over OTLP/gRPC or
// OTLP/HTTP, chosen as parseOTLPEndpoint documents.
func newOTLPMetricReader(ctx context.Context, endpoint string, prod sdkmetric.Producer) (sdkmetric.Reader, error) {
	target, err := parseOTLPEndpoint(endpoint, otlpProtocol("METRICS"))
	if err != nil {
		return nil, err
	}
	var exp sdkmetric.Exporter
	if target.http {
		o := []otlpmetrichttp.Option{
			otlpmetrichttp.WithEndpoint(target.hostport),
			otlpmetrichttp.WithURLPath(target.path("metrics")),
		}
		if target.insecure {
			o = append(o, otlpmetrichttp.WithInsecure())
		}
		exp, err = otlpmetrichttp.New(ctx, o...)
	} else {
		o := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(target.hostport)}
		if target.insecure {
			o = append(o, otlpmetricgrpc.WithInsecure())
		}
		exp, err = otlpmetricgrpc.New(ctx, o...)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp metric exporter %q: %w", endpoint, err)
	}
	return sdkmetric.NewPeriodicReader(exp, sdkmetric.WithProducer(prod)), nil
}

// instruments creates every instrument and the callback of the observed ones.
func (m *Metrics) instruments() error {
	meter := m.provider.Meter(instrumentationName)
	var errs [6]error
	m.inflight, errs[0] = meter.Int64ObservableGauge(nameInflight, metric.WithUnit(unitRequests),
		metric.WithDescription("Requests being served now."))
	m.rotations, errs[1] = meter.Int64Counter(nameRotations, metric.WithUnit(unitRotations),
		metric.WithDescription("Credential refreshes, by credential and result (success|failure)."))
	m.credExpiry, errs[2] = meter.Float64ObservableGauge(nameCredExpiry, metric.WithUnit(unitSeconds),
		metric.WithDescription("Seconds until the credential's current value expires; +Inf if it never does, 0 with no value, negative once expired."))
	m.credAge, errs[3] = meter.Float64ObservableGauge(nameCredAge, metric.WithUnit(unitSeconds),
		metric.WithDescription("Seconds since the credential's current value was issued; 0 with no value."))
	m.certExpiry, errs[4] = meter.Float64ObservableGauge(nameCertExpiry, metric.WithUnit(unitSeconds),
		metric.WithDescription("Seconds until the certificate expires; 0 with no certificate, negative once expired."))
	m.auditDropped, errs[5] = meter.Int64ObservableCounter(nameAuditDropped, metric.WithUnit(unitLines),
		metric.WithDescription("Audit lines dropped because the log output fell more than a batch behind."))
	if err := errors.Join(errs[:]...); err != nil {
		return fmt.Errorf("metric instruments: %w", err)
	}
	if _, err := meter.RegisterCallback(m.observe, m.inflight, m.credExpiry, m.credAge, m.certExpiry, m.auditDropped); err != nil {
		return fmt.Errorf("metric callback: %w", err)
	}
	return nil
}

// Handler serves every metric in the Prometheus text format, together with
// the Go runtime and process collectors, for the admin listener's /metrics.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Route returns the pre-bound instruments of the named route, building them
// on first use; later calls with the same name return the same value. Use
// RouteNone for requests that match no route. Call it when routes are
// built, not per request.
func (m *Metrics) Route(name string) *RouteMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm, ok := m.routes[name]; ok {
		return rm
	}
	rm := &RouteMetrics{name: name, attrs: attribute.NewSet(attrRoute.String(name)),
		duration: newHistogram(), upstream: newHistogram()}
	m.routes[name] = rm
	return rm
}

// InflightAdd moves sidekey_inflight_requests by n: +1 when a request
// starts, -1 when it ends. It is one atomic add.
func (m *Metrics) InflightAdd(n int64) { m.inflightN.Add(n) }

// ObserveInflight adds f's count to sidekey_inflight_requests at each
// collection, for a server that counts its requests itself. It replaces an
// earlier f.
func (m *Metrics) ObserveInflight(f func() int64) { m.inflightF.Store(&f) }

// ObserveAuditDropped reads sidekey_audit_lines_dropped_total from f at
// each collection, such as LineSink.Dropped; without it the counter stays
// at 0. It replaces an earlier f.
func (m *Metrics) ObserveAuditDropped(f func() uint64) { m.dropped.Store(&f) }

// Rotation counts one refresh of a credential; result is ResultSuccess or
// ResultFailure. Its signature is that of injector.Holder.OnRotate.
func (m *Metrics) Rotation(credential, result string) {
	m.rotations.Add(context.Background(), 1, m.rotationOption(credential, result))
}

// AddCredential creates the credential's rotation series, success and
// failure, at 0, so that they exist from start-up.
func (m *Metrics) AddCredential(name string) {
	for _, result := range []string{ResultSuccess, ResultFailure} {
		m.rotations.Add(context.Background(), 0, m.rotationOption(name, result))
	}
}

// rotationOption returns the {credential, result} attributes, built once:
// a credential rotating every few milliseconds would otherwise hash a new
// attribute set each time.
func (m *Metrics) rotationOption(credential, result string) metric.AddOption {
	key := rotationKey{credential, result}
	m.mu.Lock()
	defer m.mu.Unlock()
	opt, ok := m.rotationOpts[key]
	if !ok {
		opt = metric.WithAttributeSet(attribute.NewSet(attrCredential.String(credential), attrResult.String(result)))
		m.rotationOpts[key] = opt
	}
	return opt
}

type rotationKey struct{ credential, result string }

// CredentialState is what the expiry and age gauges need to know about one
// credential. A zero ExpiresAt means the value never expires; a zero
// IssuedAt, that its issue time is unknown (age 0).
type CredentialState struct {
	Name                string
	IssuedAt, ExpiresAt time.Time
	HasValue            bool
}

// expiry is the seconds left: +Inf for a value that never expires, 0 with
// no value, negative once past ExpiresAt (the value may still be served
// within max_stale).
func (c CredentialState) expiry(now time.Time) float64 {
	switch {
	case !c.HasValue:
		return 0
	case c.ExpiresAt.IsZero():
		return math.Inf(1)
	}
	return c.ExpiresAt.Sub(now).Seconds()
}

// age is the seconds since IssuedAt, 0 with no value or no issue time.
func (c CredentialState) age(now time.Time) float64 {
	if !c.HasValue || c.IssuedAt.IsZero() {
		return 0
	}
	return now.Sub(c.IssuedAt).Seconds()
}

// ObserveCredentials sets the function the credential gauges read at each
// collection (a Prometheus scrape or an OTLP export). It should return every
// configured credential, valued or not, so that each has its series from
// start-up. A later call replaces the function, as on a reload. f may be
// called concurrently and must not block.
func (m *Metrics) ObserveCredentials(f func() []CredentialState) { m.credentials.Store(&f) }

// CertificateState is what the certificate gauge needs to know about one
// certificate; a zero NotAfter means none is held yet (expiry 0).
type CertificateState struct {
	Name     string
	NotAfter time.Time
}

// ObserveCertificates is ObserveCredentials for certificates.
func (m *Metrics) ObserveCertificates(f func() []CertificateState) { m.certificates.Store(&f) }

// observe is the callback of the observed instruments: the gauges and the
// dropped audit lines.
func (m *Metrics) observe(_ context.Context, o metric.Observer) error {
	now := m.now()
	n := m.inflightN.Load()
	if f := m.inflightF.Load(); f != nil && *f != nil {
		n += (*f)()
	}
	o.ObserveInt64(m.inflight, n)
	var dropped uint64
	if f := m.dropped.Load(); f != nil && *f != nil {
		dropped = (*f)()
	}
	o.ObserveInt64(m.auditDropped, int64(min(dropped, math.MaxInt64)))
	if f := m.credentials.Load(); f != nil && *f != nil {
		for _, c := range (*f)() {
			attrs := metric.WithAttributeSet(attribute.NewSet(attrCredential.String(c.Name)))
			o.ObserveFloat64(m.credExpiry, c.expiry(now), attrs)
			o.ObserveFloat64(m.credAge, c.age(now), attrs)
		}
	}
	if f := m.certificates.Load(); f != nil && *f != nil {
		for _, c := range (*f)() {
			left := 0.0
			if !c.NotAfter.IsZero() {
				left = c.NotAfter.Sub(now).Seconds()
			}
			o.ObserveFloat64(m.certExpiry, left, metric.WithAttributeSet(attribute.NewSet(attrCertificate.String(c.Name))))
		}
	}
	return nil
}

// Shutdown stops the OTLP export after a last push, bounded by ctx. The
// Prometheus handler serves no application metrics afterwards. Calls after
// the first return the first call's result.
func (m *Metrics) Shutdown(ctx context.Context) error {
	m.shutdownOnce.Do(func() { m.shutdownErr = m.provider.Shutdown(ctx) })
	return m.shutdownErr
}

// RouteMetrics are one route's request series. Observe is safe for
// concurrent use, takes no lock and allocates nothing.
type RouteMetrics struct {
	name  string
	attrs attribute.Set // {route}
	codes [codeMax - codeMin + 1]atomic.Uint64
	other atomic.Uint64
	// duration and upstream are the two histograms.
	duration, upstream histogram
}

// Name is the route label.
func (rm *RouteMetrics) Name() string { return rm.name }

// Observe records one answered request: its status code, its total time,
// and its upstream time (upstream < 0: no upstream call was made, as for a
// 503 without a credential).
func (rm *RouteMetrics) Observe(code int, total, upstream time.Duration) {
	if code < codeMin || code > codeMax {
		rm.other.Add(1)
	} else {
		rm.codes[code-codeMin].Add(1)
	}
	rm.duration.observe(total)
	if upstream >= 0 {
		rm.upstream.observe(upstream)
	}
}

// bucketBounds are DurationBuckets as durations, for comparing without a
// conversion per request.
var bucketBounds = func() []time.Duration {
	b := make([]time.Duration, len(DurationBuckets))
	for i, s := range DurationBuckets {
		b[i] = time.Duration(math.Round(s * float64(time.Second)))
	}
	return b
}()

// histogram is an explicit-bucket histogram of durations made of atomic
// counters. A collection reads the buckets one by one while requests keep
// adding, so the sum may be a request ahead of or behind the counts; the
// counts themselves are always consistent with the total.
type histogram struct {
	counts []atomic.Uint64 // one per bound of DurationBuckets, then +Inf
	sum    atomic.Int64    // nanoseconds
}

func newHistogram() histogram {
	return histogram{counts: make([]atomic.Uint64, len(bucketBounds)+1)}
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(bucketBounds) && d > bucketBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// point is the histogram's cumulative data point; ok is false before the
// first observation, so that a series appears with its first request.
func (h *histogram) point(attrs attribute.Set, start, now time.Time) (metricdata.HistogramDataPoint[float64], bool) {
	counts := make([]uint64, len(h.counts))
	var total uint64
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return metricdata.HistogramDataPoint[float64]{}, false
	}
	return metricdata.HistogramDataPoint[float64]{
		Attributes: attrs, StartTime: start, Time: now,
		Count: total, Bounds: DurationBuckets, BucketCounts: counts,
		Sum: time.Duration(h.sum.Load()).Seconds(),
	}, true
}

// producer hands the request series to every reader at collection time;
// it is built before the Metrics it reads, hence the pointer.
type producer struct{ m atomic.Pointer[Metrics] }

// Produce implements sdkmetric.Producer: sidekey_requests_total and both
// duration histograms, one series per route (and status code) that has
// seen a request, cumulative since start-up.
func (p *producer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	m := p.m.Load()
	if m == nil {
		return nil, nil
	}
	m.mu.Lock()
	routes := make([]*RouteMetrics, 0, len(m.routes))
	for _, rm := range m.routes {
		routes = append(routes, rm)
	}
	m.mu.Unlock()
	slices.SortFunc(routes, func(a, b *RouteMetrics) int { return strings.Compare(a.name, b.name) })
	now := m.now()
	requests := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
	duration := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	upstream := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	for _, rm := range routes {
		for i := range rm.codes {
			if n := rm.codes[i].Load(); n > 0 {
				requests.DataPoints = append(requests.DataPoints, rm.requestPoint(strconv.Itoa(codeMin+i), n, m.start, now))
			}
		}
		if n := rm.other.Load(); n > 0 {
			requests.DataPoints = append(requests.DataPoints, rm.requestPoint(codeOther, n, m.start, now))
		}
		if dp, ok := rm.duration.point(rm.attrs, m.start, now); ok {
			duration.DataPoints = append(duration.DataPoints, dp)
		}
		if dp, ok := rm.upstream.point(rm.attrs, m.start, now); ok {
			upstream.DataPoints = append(upstream.DataPoints, dp)
		}
	}
	return []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: instrumentationName},
		Metrics: append([]metricdata.Metrics{
			{Name: nameRequests, Unit: unitRequests, Description: "Requests answered, by route and status code.", Data: requests},
			{Name: nameRequestDuration, Unit: unitSeconds, Description: "Time from request received to response written, by route.", Data: duration},
			{Name: nameUpstream, Unit: unitSeconds, Description: "Time spent in the upstream call, by route.", Data: upstream},
		}, m.counterMetrics(now)...),
	}}, nil
}

func (rm *RouteMetrics) requestPoint(code string, n uint64, start, now time.Time) metricdata.DataPoint[int64] {
	return metricdata.DataPoint[int64]{
		Attributes: attribute.NewSet(attrRoute.String(rm.name), attrCode.String(code)),
		StartTime:  start, Time: now, Value: int64(n),
	}
}
