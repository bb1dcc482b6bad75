package telemetry

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultServiceName is service.name when neither the configuration nor
// OTEL_SERVICE_NAME sets one.
const DefaultServiceName = "sidekey"

// Attributes of the credential.rotate span.
const (
	spanRotate     = "credential.rotate"
	attrVersion    = attribute.Key("version")
	eventException = "exception"
	attrExcMessage = attribute.Key("exception.message")
)

// TracingOptions configures NewTracing. The zero value turns tracing off
// unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
type TracingOptions struct {
	// ServiceName is the resource's service.name; "" means the
	// OTEL_SERVICE_NAME variable, else DefaultServiceName.
	ServiceName string
	// OTLPEndpoint is where spans go; "" means the
	// OTEL_EXPORTER_OTLP_ENDPOINT variable, else tracing is off. See
	// parseOTLPEndpoint for the forms it takes.
	OTLPEndpoint string
}

// Tracing is sidekey's tracer provider: spans are batched and exported over
// OTLP, and W3C trace context and baggage are propagated. When no endpoint
// is configured it is off: Enabled reports false, Tracer returns a no-op
// tracer, and callers skip span work altogether. Methods are safe for
// concurrent use.
type Tracing struct {
	// Scrub, when set, filters every error text before it goes into a span.
	// Error texts should never hold a secret; this is defence in depth
	// (Redactor.String fits). Set it before the Tracing is shared.
	Scrub func(string) string

	provider   *sdktrace.TracerProvider // nil when off
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	target     string

	shutdownOnce sync.Once
	shutdownErr  error
}

// NewTracing builds the tracer provider. It connects to nothing: an
// unreachable collector shows up later as export errors, never here. It
// fails only on an endpoint it cannot read.
func NewTracing(ctx context.Context, opts TracingOptions) (*Tracing, error) {
	t := &Tracing{
		tracer:     noop.NewTracerProvider().Tracer(instrumentationName),
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	endpoint := otlpEndpoint(opts.OTLPEndpoint)
	if endpoint == "" {
		return t, nil
	}
	target, err := parseOTLPEndpoint(endpoint, otlpProtocol("TRACES"))
	if err != nil {
		return nil, err
	}
	res, err := newResource(ctx, opts.ServiceName)
	if err != nil {
		return nil, err
	}
	exp, err := newOTLPSpanExporter(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter %s: %w", target, err)
	}
	t.provider = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	t.tracer = t.provider.Tracer(instrumentationName)
	t.target = target.String()
	return t, nil
}

func newOTLPSpanExporter(ctx context.Context, target otlpTarget) (sdktrace.SpanExporter, error) {
	if target.http {
		o := []otlptracehttp.Option{
			otlptracehttp.WithEndpoint(target.hostport),
			otlptracehttp.WithURLPath(target.path("traces")),
		}
		if target.insecure {
			o = append(o, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, o...)
	}
	o := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(target.hostport)}
	if target.insecure {
		o = append(o, otlptracegrpc.WithInsecure())
	}
	return otlptracegrpc.New(ctx, o...)
}

// Enabled reports whether spans are exported. When false the proxy should
// skip all span work: no context extraction, no span, no attributes.
func (t *Tracing) Enabled() bool { return t.provider != nil }

// Endpoint describes where spans go, for a start-up log line, such as
// "otlp/grpc 127.0.0.1:4317 plaintext"; "" when tracing is off.
func (t *Tracing) Endpoint() string { return t.target }

// Tracer returns the tracer of sidekey's spans, a no-op one when off.
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// Propagator returns the W3C trace context and baggage propagator.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.propagator }

// RotationEvent records a short "credential.rotate" span with the
// credential's name, the result (ResultSuccess or ResultFailure) and the
// version now held. A failure sets the span's status to error; err, when
// not nil, is added as an "exception" event, its text passed through Scrub.
// It does nothing when tracing is off.
func (t *Tracing) RotationEvent(credential, result string, version uint64, err error) {
	if !t.Enabled() {
		return
	}
	_, span := t.tracer.Start(context.Background(), spanRotate, trace.WithAttributes(
		attrCredential.String(credential),
		attrResult.String(result),
		attrVersion.Int64(int64(version)),
	))
	defer span.End()
	switch {
	case err != nil:
		msg := t.scrub(err.Error())
		span.AddEvent(eventException, trace.WithAttributes(attrExcMessage.String(msg)))
		span.SetStatus(codes.Error, msg)
	case result == ResultFailure:
		span.SetStatus(codes.Error, result)
	}
}

func (t *Tracing) scrub(s string) string {
	if t.Scrub == nil {
		return s
	}
	return t.Scrub(s)
}

// Shutdown flushes the spans still batched and stops the exporter, bounded
// by ctx. Calls after the first return the first call's result.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	t.shutdownOnce.Do(func() { t.shutdownErr = t.provider.Shutdown(ctx) })
	return t.shutdownErr
}

// newResource describes this process to traces and metrics: service.name
// (name, else OTEL_SERVICE_NAME, else DefaultServiceName), the attributes
// of OTEL_RESOURCE_ATTRIBUTES, and the SDK's own.
func newResource(ctx context.Context, name string) (*resource.Resource, error) {
	if name == "" {
		name = os.Getenv("OTEL_SERVICE_NAME")
	}
	if name == "" {
		name = DefaultServiceName
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
		resource.WithAttributes(attribute.String("service.name", name)), // last: wins
	)
	if err != nil {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	return res, nil
}

// otlpEndpoint is the configured endpoint, else OTEL_EXPORTER_OTLP_ENDPOINT;
// "" (no OTLP export) when neither is set or OTEL_SDK_DISABLED is true.
func otlpEndpoint(configured string) string {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return ""
	}
	if configured != "" {
		return configured
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
}

// otlpProtocol is OTEL_EXPORTER_OTLP_<signal>_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL, else "" (decide from the endpoint).
func otlpProtocol(signal string) string {
	if p := os.Getenv("OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"); p != "" {
		return p
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
}

// Default OTLP ports, used when a bare endpoint names none.
const (
	portGRPC = "4317"
	portHTTP = "4318"
)

// otlpTarget is where and how OTLP data is sent.
type otlpTarget struct {
	http     bool   // OTLP/HTTP with protobuf bodies, else OTLP/gRPC
	insecure bool   // plaintext, else TLS with the system's roots
	hostport string // host:port
	basePath string // OTLP/HTTP only: the path before "/v1/<signal>"
}

// path is the OTLP/HTTP path of a signal: "traces" or "metrics".
func (t otlpTarget) path(signal string) string { return t.basePath + "/v1/" + signal }

func (t otlpTarget) String() string {
	security := "tls"
	if t.insecure {
		security = "plaintext"
	}
	if t.http {
		return "otlp/http " + t.hostport + t.path("traces") + " " + security
	}
	return "otlp/grpc " + t.hostport + " " + security
}

// parseOTLPEndpoint reads an OTLP endpoint, the same for traces and metrics:
//
//   - "host:port" and "http://host:port" send in plaintext, "https://host:port"
//     over TLS (system roots, or OTEL_EXPORTER_OTLP_CERTIFICATE).
//   - protocol "grpc" or "http/protobuf" (OTEL_EXPORTER_OTLP_PROTOCOL) chooses
//     the transport. Without one, OTLP/HTTP is chosen when the port is 4318
//     or the endpoint has a path (such as ".../v1/traces"); otherwise
//     OTLP/gRPC.
//   - For OTLP/HTTP a trailing "/v1/traces" or "/v1/metrics" is dropped and
//     the rest is the base path each signal's "/v1/<signal>" is appended to.
//   - A missing port is 4317 (gRPC) or 4318 (HTTP) for a bare host, and the
//     scheme's (80, 443) for a URL.
func parseOTLPEndpoint(endpoint, protocol string) (otlpTarget, error) {
	var t otlpTarget
	raw := endpoint
	bare := !strings.Contains(endpoint, "://")
	if bare {
		raw = "http://" + endpoint
	}
	u, err := url.Parse(raw)
	if err != nil {
		return t, fmt.Errorf("otlp endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "http":
		t.insecure = true
	case "https":
	default:
		return t, fmt.Errorf("otlp endpoint %q: scheme %q: want http or https", endpoint, u.Scheme)
	}
	if u.Hostname() == "" {
		return t, fmt.Errorf("otlp endpoint %q: no host", endpoint)
	}
	path := strings.TrimSuffix(u.Path, "/")
	switch protocol {
	case "grpc":
	case "http/protobuf":
		t.http = true
	case "":
		t.http = u.Port() == portHTTP || path != ""
	default:
		return t, fmt.Errorf("otlp protocol %q: want grpc or http/protobuf", protocol)
	}
	if t.http {
		t.basePath = strings.TrimSuffix(strings.TrimSuffix(path, "/v1/traces"), "/v1/metrics")
	}
	port := u.Port()
	switch {
	case port != "":
	case bare && t.http:
		port = portHTTP
	case bare:
		port = portGRPC
	case u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	t.hostport = net.JoinHostPort(u.Hostname(), port)
	return t, nil
}
