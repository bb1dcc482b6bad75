package telemetry

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
)

// clearOTelEnv keeps the caller's environment from reaching the SDK.
func clearOTelEnv(t testing.TB) {
	t.Helper()
	for _, k := range []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
		"OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER",
	} {
		t.Setenv(k, "")
	}
}

func newTestMetrics(t *testing.T, now time.Time) *Metrics {
	t.Helper()
	clearOTelEnv(t)
	m, err := NewMetrics(MetricsOptions{ServiceName: "sidekey-test", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return m
}

// scrape GETs the handler and parses the Prometheus text format.
func scrape(t *testing.T, m *Metrics) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q, want text/plain", ct)
	}
	var body strings.Builder
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(teeReader{resp, &body})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return families, body.String()
}

type teeReader struct {
	resp *http.Response
	sb   *strings.Builder
}

func (r teeReader) Read(p []byte) (int, error) {
	n, err := r.resp.Body.Read(p)
	r.sb.Write(p[:n])
	return n, err
}

// series finds the metric of family name whose labels are exactly want.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
	for _, m := range fam.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) == len(want) && mapsEqual(got, want) {
			return m
		}
	}
	t.Fatalf("%s: no series %v", name, want)
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestMetricsExposition(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	m := newTestMetrics(t, now)

	m.AddCredential("stripe")
	m.AddCredential("static")
	m.AddCredential("pending")
	m.ObserveCredentials(func() []CredentialState {
		return []CredentialState{
			{Name: "stripe", HasValue: true, IssuedAt: now.Add(-90 * time.Second), ExpiresAt: now.Add(time.Hour)},
			{Name: "static", HasValue: true, IssuedAt: now.Add(-time.Minute)}, // never expires
			{Name: "pending"}, // no value yet
		}
	})
	m.ObserveCertificates(func() []CertificateState {
		return []CertificateState{{Name: "api.example.com", NotAfter: now.Add(48 * time.Hour)}}
	})

	// Nothing observed yet: every credential's rotations exist at 0.
	fams, _ := scrape(t, m)
	for _, cred := range []string{"stripe", "static", "pending"} {
		for _, result := range []string{ResultSuccess, ResultFailure} {
			got := series(t, fams, "sidekey_credential_rotations_total", map[string]string{"credential": cred, "result": result})
			if v := got.GetCounter().GetValue(); v != 0 {
				t.Errorf("rotations %s/%s at start: %v, want 0", cred, result, v)
			}
		}
	}
	// No sink observed yet: the dropped-lines counter exists at 0.
	if v := series(t, fams, "sidekey_audit_lines_dropped_total", map[string]string{}).GetCounter().GetValue(); v != 0 {
		t.Errorf("audit lines dropped at start: %v, want 0", v)
	}

	api, none := m.Route("api"), m.Route(RouteNone)
	if m.Route("api") != api {
		t.Error("Route is not memoised")
	}
	api.Observe(200, 3*time.Millisecond, 2*time.Millisecond)
	api.Observe(200, 40*time.Millisecond, 30*time.Millisecond)
	api.Observe(503, time.Millisecond, -1) // no upstream call
	api.Observe(999, time.Millisecond, 0)  // outside 100..599
	none.Observe(404, 100*time.Microsecond, -1)
	m.InflightAdd(1)
	m.InflightAdd(1)
	m.InflightAdd(-1)
	m.Rotation("stripe", ResultSuccess)
	m.Rotation("stripe", ResultSuccess)
	m.Rotation("stripe", ResultFailure)
	m.ObserveAuditDropped(func() uint64 { return 7 })

	fams, text := scrape(t, m)
	t.Logf("exposition:\n%s", text)

	want := map[string]dto.MetricType{
		"sidekey_requests_total":             dto.MetricType_COUNTER,
		"sidekey_request_duration_seconds":   dto.MetricType_HISTOGRAM,
		"sidekey_upstream_duration_seconds":  dto.MetricType_HISTOGRAM,
		"sidekey_credential_rotations_total": dto.MetricType_COUNTER,
		"sidekey_credential_expiry_seconds":  dto.MetricType_GAUGE,
		"sidekey_credential_age_seconds":     dto.MetricType_GAUGE,
		"sidekey_certificate_expiry_seconds": dto.MetricType_GAUGE,
		"sidekey_inflight_requests":          dto.MetricType_GAUGE,
		"sidekey_audit_lines_dropped_total":  dto.MetricType_COUNTER,
	}
	for name, typ := range want {
		fam, ok := fams[name]
		if !ok {
			t.Errorf("missing %s", name)
			continue
		}
		if fam.GetType() != typ {
			t.Errorf("%s: type %v, want %v", name, fam.GetType(), typ)
		}
	}
	var sidekey []string
	for name := range fams {
		if strings.HasPrefix(name, "sidekey") {
			sidekey = append(sidekey, name)
		}
	}
	sort.Strings(sidekey)
	if len(sidekey) != len(want) {
		t.Errorf("sidekey families %v, want exactly %d", sidekey, len(want))
	}

	counter := func(name string, labels map[string]string) float64 {
		return series(t, fams, name, labels).GetCounter().GetValue()
	}
	gauge := func(name string, labels map[string]string) float64 {
		return series(t, fams, name, labels).GetGauge().GetValue()
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sidekey_requests_total", map[string]string{"route": "api", "code": "200"}, 2},
		{"sidekey_requests_total", map[string]string{"route": "api", "code": "503"}, 1},
		{"sidekey_requests_total", map[string]string{"route": "api", "code": "other"}, 1},
		{"sidekey_requests_total", map[string]string{"route": "none", "code": "404"}, 1},
		{"sidekey_credential_rotations_total", map[string]string{"credential": "stripe", "result": "success"}, 2},
		{"sidekey_credential_rotations_total", map[string]string{"credential": "stripe", "result": "failure"}, 1},
		{"sidekey_credential_rotations_total", map[string]string{"credential": "static", "result": "success"}, 0},
		{"sidekey_audit_lines_dropped_total", map[string]string{}, 7},
	} {
		if got := counter(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sidekey_inflight_requests", map[string]string{}, 1},
		{"sidekey_credential_expiry_seconds", map[string]string{"credential": "stripe"}, 3600},
		{"sidekey_credential_expiry_seconds", map[string]string{"credential": "static"}, math.Inf(1)},
		{"sidekey_credential_expiry_seconds", map[string]string{"credential": "pending"}, 0},
		{"sidekey_credential_age_seconds", map[string]string{"credential": "stripe"}, 90},
		{"sidekey_credential_age_seconds", map[string]string{"credential": "pending"}, 0},
		{"sidekey_certificate_expiry_seconds", map[string]string{"certificate": "api.example.com"}, 48 * 3600},
	} {
		if got := gauge(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if !strings.Contains(text, `sidekey_credential_expiry_seconds{credential="static"} +Inf`) {
		t.Error(`exposition lacks sidekey_credential_expiry_seconds{credential="static"} +Inf`)
	}

	total := series(t, fams, "sidekey_request_duration_seconds", map[string]string{"route": "api"}).GetHistogram()
	if total.GetSampleCount() != 4 {
		t.Errorf("request duration count %d, want 4", total.GetSampleCount())
	}
	if n := len(total.GetBucket()); n != len(DurationBuckets)+1 { // and +Inf
		t.Errorf("%d buckets, want %d", n, len(DurationBuckets)+1)
	}
	up := series(t, fams, "sidekey_upstream_duration_seconds", map[string]string{"route": "api"}).GetHistogram()
	if up.GetSampleCount() != 3 {
		t.Errorf("upstream duration count %d, want 3 (the 503 made no call)", up.GetSampleCount())
	}
	if math.Abs(up.GetSampleSum()-0.032) > 1e-9 {
		t.Errorf("upstream duration sum %v, want 0.032", up.GetSampleSum())
	}
	if !strings.Contains(text, `service_name="sidekey-test"`) {
		t.Error("target_info lacks service_name")
	}
}

func TestMetricsCallbackReplaced(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	m := newTestMetrics(t, now)
	m.ObserveCredentials(func() []CredentialState { return []CredentialState{{Name: "old", HasValue: true}} })
	m.ObserveCredentials(func() []CredentialState { return []CredentialState{{Name: "new", HasValue: true}} })
	fams, _ := scrape(t, m)
	fam := fams["sidekey_credential_expiry_seconds"]
	if len(fam.GetMetric()) != 1 || fam.GetMetric()[0].GetLabel()[0].GetValue() != "new" {
		t.Fatalf("after replacing the callback: %v", fam)
	}
}

func TestMetricsShutdownIdempotent(t *testing.T) {
	m := newTestMetrics(t, time.Now())
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestRequestPathAllocatesNothing(t *testing.T) {
	m := newTestMetrics(t, time.Now())
	rm := m.Route("api")
	rm.Observe(200, time.Millisecond, time.Millisecond) // builds the code's options
	if n := testing.AllocsPerRun(1000, func() { rm.Observe(200, time.Millisecond, 500*time.Microsecond) }); n != 0 {
		t.Errorf("Observe: %v allocs/op, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { rm.Observe(777, time.Millisecond, -1) }); n != 0 {
		t.Errorf("Observe, code out of range: %v allocs/op, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { m.InflightAdd(1); m.InflightAdd(-1) }); n != 0 {
		t.Errorf("InflightAdd: %v allocs/op, want 0", n)
	}
}

func TestRouteCodesConcurrentFirstUse(t *testing.T) {
	m := newTestMetrics(t, time.Now())
	rm := m.Route("api")
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for code := 100; code < 600; code++ {
				rm.Observe(code, time.Millisecond, -1)
			}
		}()
	}
	for range 8 {
		<-done
	}
	fams, _ := scrape(t, m)
	if got := series(t, fams, "sidekey_requests_total", map[string]string{"route": "api", "code": "418"}).GetCounter().GetValue(); got != 8 {
		t.Fatalf("code 418 counted %v times, want 8", got)
	}
}

func BenchmarkRouteObserve(b *testing.B) {
	clearOTelEnv(b)
	m, err := NewMetrics(MetricsOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	rm := m.Route("api")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rm.Observe(200, 2*time.Millisecond, time.Millisecond)
		}
	})
}

func BenchmarkInflightAdd(b *testing.B) {
	clearOTelEnv(b)
	m, err := NewMetrics(MetricsOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.InflightAdd(1)
			m.InflightAdd(-1)
		}
	})
}

// metricsReceiver is an OTLP/gRPC metrics collector.
type metricsReceiver struct {
	colmetricpb.UnimplementedMetricsServiceServer
	got chan *colmetricpb.ExportMetricsServiceRequest
}

func (r *metricsReceiver) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	r.got <- req
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

func TestMetricsExportOverOTLP(t *testing.T) {
	clearOTelEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recv := &metricsReceiver{got: make(chan *colmetricpb.ExportMetricsServiceRequest, 64)}
	srv := grpc.NewServer()
	colmetricpb.RegisterMetricsServiceServer(srv, recv)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	m, err := NewMetrics(MetricsOptions{ServiceName: "sidekey-test", OTLPEndpoint: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	m.Route("api").Observe(200, time.Millisecond, time.Millisecond)
	m.AddCredential("stripe")
	if err := m.Shutdown(context.Background()); err != nil { // pushes once more
		t.Fatal(err)
	}
	names := map[string]bool{}
	for done := false; !done; {
		select {
		case req := <-recv.got:
			for _, rm := range req.GetResourceMetrics() {
				for _, sm := range rm.GetScopeMetrics() {
					for _, mt := range sm.GetMetrics() {
						names[mt.GetName()] = true
					}
				}
			}
		default:
			done = true
		}
	}
	for _, want := range []string{nameRequests, nameRequestDuration, nameUpstream, nameRotations} {
		if !names[want] {
			t.Errorf("OTLP export lacks %s; got %v", want, names)
		}
	}
}

func TestHistogramBucketsMatchPrometheusLe(t *testing.T) {
	if got, want := len(newHistogram().counts), len(DurationBuckets)+1; got != want {
		t.Fatalf("histogram has %d buckets for %d bounds; want %d", got, len(DurationBuckets), want)
	}
	m := newTestMetrics(t, time.Now())
	rm := m.Route("api")
	// A value on a bound counts in that bound's bucket (le is inclusive);
	// one past the last bound only in +Inf.
	rm.Observe(200, 500*time.Microsecond, -1)
	rm.Observe(200, 500*time.Microsecond+1, -1)
	rm.Observe(503, 61*time.Second, 2*time.Second)
	fams, _ := scrape(t, m)
	h := series(t, fams, "sidekey_request_duration_seconds", map[string]string{"route": "api"}).GetHistogram()
	if h.GetSampleCount() != 3 {
		t.Fatalf("count %d, want 3", h.GetSampleCount())
	}
	if want := 0.0005 + 0.000500001 + 61; math.Abs(h.GetSampleSum()-want) > 1e-9 {
		t.Errorf("sum %v, want %v", h.GetSampleSum(), want)
	}
	cum := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		cum[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	for le, want := range map[float64]uint64{0.0005: 1, 0.001: 2, 60: 2} {
		if cum[le] != want {
			t.Errorf("le=%v: %d, want %d", le, cum[le], want)
		}
	}
	up := series(t, fams, "sidekey_upstream_duration_seconds", map[string]string{"route": "api"}).GetHistogram()
	if up.GetSampleCount() != 1 || up.GetSampleSum() != 2 {
		t.Errorf("upstream count %d sum %v, want 1 and 2 (requests without an upstream call are not counted)", up.GetSampleCount(), up.GetSampleSum())
	}
	codes := map[string]float64{}
	for _, code := range []string{"200", "503"} {
		codes[code] = series(t, fams, "sidekey_requests_total", map[string]string{"route": "api", "code": code}).GetCounter().GetValue()
	}
	if codes["200"] != 2 || codes["503"] != 1 {
		t.Errorf("requests by code %v, want 200:2 503:1", codes)
	}
}
