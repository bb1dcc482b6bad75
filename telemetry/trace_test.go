package telemetry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// traceReceiver is an OTLP/gRPC trace collector that hands over every
// export request it receives.
type traceReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	got chan *coltracepb.ExportTraceServiceRequest
}

func (r *traceReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.got <- req
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// startGRPCReceiver serves a traceReceiver on 127.0.0.1 and returns its address.
func startGRPCReceiver(t *testing.T) (string, *traceReceiver) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recv := &traceReceiver{got: make(chan *coltracepb.ExportTraceServiceRequest, 64)}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, recv)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), recv
}

// received drains what the receiver holds. Shutdown exports synchronously,
// so after it returns everything sent is already here.
func received(ch chan *coltracepb.ExportTraceServiceRequest) []*coltracepb.ExportTraceServiceRequest {
	var reqs []*coltracepb.ExportTraceServiceRequest
	for {
		select {
		case r := <-ch:
			reqs = append(reqs, r)
		default:
			return reqs
		}
	}
}

type receivedSpan struct {
	span     *tracepb.Span
	resource []*commonpb.KeyValue
}

func receivedSpans(reqs []*coltracepb.ExportTraceServiceRequest) []receivedSpan {
	var out []receivedSpan
	for _, req := range reqs {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, receivedSpan{span: s, resource: rs.GetResource().GetAttributes()})
				}
			}
		}
	}
	return out
}

// findSpan finds the span called name whose credential attribute is
// credential ("" for none).
func findSpan(spans []receivedSpan, name, credential string) (receivedSpan, bool) {
	for _, s := range spans {
		if s.span.GetName() == name && attr(s.span.GetAttributes(), "credential").GetStringValue() == credential {
			return s, true
		}
	}
	return receivedSpan{}, false
}

func attr(kvs []*commonpb.KeyValue, key string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

func TestTracingExportsOverGRPC(t *testing.T) {
	clearOTelEnv(t)
	addr, recv := startGRPCReceiver(t)
	ctx := context.Background()
	tr, err := NewTracing(ctx, TracingOptions{ServiceName: "sidekey-test", OTLPEndpoint: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing off with an endpoint")
	}
	if want := "otlp/grpc " + addr + " plaintext"; tr.Endpoint() != want {
		t.Errorf("Endpoint() = %q, want %q", tr.Endpoint(), want)
	}
	const secret = "hunter2-secret"
	tr.Scrub = func(s string) string { return strings.ReplaceAll(s, secret, Mask) }

	_, span := tr.Tracer().Start(ctx, "proxy.request")
	span.End()
	tr.RotationEvent("stripe", ResultFailure, 7, errors.New("vault said no to "+secret))
	tr.RotationEvent("github", ResultSuccess, 3, nil)
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}

	spans := receivedSpans(received(recv.got))
	req, ok := findSpan(spans, "proxy.request", "")
	if !ok {
		t.Fatalf("span not received; got %d spans", len(spans))
	}
	if v := attr(req.resource, "service.name").GetStringValue(); v != "sidekey-test" {
		t.Errorf("service.name %q, want sidekey-test", v)
	}

	fail, ok := findSpan(spans, spanRotate, "stripe")
	if !ok {
		t.Fatal("no rotation span for stripe")
	}
	if got := attr(fail.span.GetAttributes(), "result").GetStringValue(); got != ResultFailure {
		t.Errorf("result %q, want failure", got)
	}
	if got := attr(fail.span.GetAttributes(), "version").GetIntValue(); got != 7 {
		t.Errorf("version %d, want 7", got)
	}
	if fail.span.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("status %v, want error", fail.span.GetStatus())
	}
	events := fail.span.GetEvents()
	if len(events) != 1 || events[0].GetName() != "exception" {
		t.Fatalf("events %v, want one exception", events)
	}
	msg := attr(events[0].GetAttributes(), "exception.message").GetStringValue()
	if msg != "vault said no to "+Mask {
		t.Errorf("exception.message %q, want the scrubbed text", msg)
	}
	if strings.Contains(fail.span.String(), secret) {
		t.Error("the secret reached the exported span")
	}

	ok2, found := findSpan(spans, spanRotate, "github")
	if !found {
		t.Fatal("no rotation span for github")
	}
	if len(ok2.span.GetEvents()) != 0 || ok2.span.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("successful rotation span: events %v, status %v", ok2.span.GetEvents(), ok2.span.GetStatus())
	}
}

func TestTracingExportsOverHTTP(t *testing.T) {
	clearOTelEnv(t)
	got := make(chan *coltracepb.ExportTraceServiceRequest, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/otlp/v1/traces" {
			http.Error(w, "wrong path "+r.URL.Path, http.StatusNotFound)
			return
		}
		body, err := io.ReadAll(r.Body)
		req := &coltracepb.ExportTraceServiceRequest{}
		if err == nil {
			err = proto.Unmarshal(body, req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- req
		resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp)
	}))
	defer srv.Close()

	ctx := context.Background()
	// A path means OTLP/HTTP; the signal's /v1/traces is appended to it.
	tr, err := NewTracing(ctx, TracingOptions{OTLPEndpoint: srv.URL + "/otlp"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Tracer().Start(ctx, "proxy.request")
	span.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	req, ok := findSpan(receivedSpans(received(got)), "proxy.request", "")
	if !ok {
		t.Fatal("span not received over OTLP/HTTP")
	}
	if v := attr(req.resource, "service.name").GetStringValue(); v != DefaultServiceName {
		t.Errorf("service.name %q, want %s", v, DefaultServiceName)
	}
}

func TestTracingOff(t *testing.T) {
	clearOTelEnv(t)
	ctx := context.Background()
	tr, err := NewTracing(ctx, TracingOptions{ServiceName: "sidekey"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() || tr.Endpoint() != "" {
		t.Fatalf("tracing on without an endpoint: %q", tr.Endpoint())
	}
	if _, span := tr.Tracer().Start(ctx, "x"); span.IsRecording() {
		t.Error("the no-op tracer records")
	}
	tr.RotationEvent("stripe", ResultFailure, 1, errors.New("boom")) // no-op, no panic
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	tr, err = NewTracing(ctx, TracingOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Error("OTEL_EXPORTER_OTLP_ENDPOINT ignored")
	}
	_ = tr.Shutdown(ctx)

	t.Setenv("OTEL_SDK_DISABLED", "true")
	if tr, err = NewTracing(ctx, TracingOptions{OTLPEndpoint: "127.0.0.1:4317"}); err != nil || tr.Enabled() {
		t.Errorf("OTEL_SDK_DISABLED=true: enabled %v, err %v", tr.Enabled(), err)
	}
}

func TestTracingPropagator(t *testing.T) {
	clearOTelEnv(t)
	tr, err := NewTracing(context.Background(), TracingOptions{})
	if err != nil {
		t.Fatal(err)
	}
	carrier := propagation.MapCarrier{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"baggage":     "tenant=acme",
	}
	out := propagation.MapCarrier{}
	p := tr.Propagator()
	p.Inject(p.Extract(context.Background(), carrier), out)
	for k, v := range carrier {
		if out[k] != v {
			t.Errorf("%s: got %q, want %q", k, out[k], v)
		}
	}
}

func TestParseOTLPEndpoint(t *testing.T) {
	for _, c := range []struct {
		endpoint, protocol string
		want               string // otlpTarget.String(), "" for an error
	}{
		{"collector:4317", "", "otlp/grpc collector:4317 plaintext"},
		{"collector", "", "otlp/grpc collector:4317 plaintext"},
		{"http://collector:4317", "", "otlp/grpc collector:4317 plaintext"},
		{"https://collector:4317", "", "otlp/grpc collector:4317 tls"},
		{"https://api.example.com", "", "otlp/grpc api.example.com:443 tls"},
		{"https://api.example.com/", "", "otlp/grpc api.example.com:443 tls"},
		{"[::1]:4317", "", "otlp/grpc [::1]:4317 plaintext"},
		{"collector:4318", "", "otlp/http collector:4318/v1/traces plaintext"},
		{"http://collector:4318", "", "otlp/http collector:4318/v1/traces plaintext"},
		{"https://otlp.example.com/v1/traces", "", "otlp/http otlp.example.com:443/v1/traces tls"},
		{"https://otlp.example.com/otlp/v1/metrics", "", "otlp/http otlp.example.com:443/otlp/v1/traces tls"},
		{"http://collector:4317", "http/protobuf", "otlp/http collector:4317/v1/traces plaintext"},
		{"collector", "http/protobuf", "otlp/http collector:4318/v1/traces plaintext"},
		{"http://collector:4318", "grpc", "otlp/grpc collector:4318 plaintext"},
		{"ftp://collector:21", "", ""},
		{"http://", "", ""},
		{"collector:4317", "http/json", ""},
	} {
		got, err := parseOTLPEndpoint(c.endpoint, c.protocol)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%q (%q): want an error, got %s", c.endpoint, c.protocol, got)
		case c.want != "" && err != nil:
			t.Errorf("%q (%q): %v", c.endpoint, c.protocol, err)
		case c.want != "" && got.String() != c.want:
			t.Errorf("%q (%q) = %s, want %s", c.endpoint, c.protocol, got, c.want)
		}
	}
	got, _ := parseOTLPEndpoint("https://otlp.example.com/otlp/v1/traces", "")
	if p := got.path("metrics"); p != "/otlp/v1/metrics" {
		t.Errorf("metrics path %q, want /otlp/v1/metrics", p)
	}
}
