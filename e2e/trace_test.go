package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// otlpReceiver is an OTLP/gRPC collector on 127.0.0.1 that keeps every
// export request it gets: traces, and metrics (sidekey pushes those to the
// same endpoint).
//
// It serves the collector's Export methods by hand: the request messages
// ExportTraceServiceRequest and ExportMetricsServiceRequest are, field for
// field, TracesData and MetricsData (resource_spans / resource_metrics = 1),
// and an empty message is a valid response. Decoding them as those keeps
// the collector packages, and the grpc-gateway module they import, out of
// this module.
type otlpReceiver struct {
	Addr string

	mu      sync.Mutex
	exports []proto.Message // every request, traces and metrics, in order
	traces  []*tracepb.TracesData
}

// exportService describes one OTLP collector service with a unary Export.
func exportService(name string, newRequest func() proto.Message) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: name,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Export",
			Handler: func(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				req := newRequest()
				if err := dec(req); err != nil {
					return nil, err
				}
				srv.(*otlpReceiver).add(req)
				return &emptypb.Empty{}, nil
			},
		}},
	}
}

func (r *otlpReceiver) add(m proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exports = append(r.exports, m)
	if td, ok := m.(*tracepb.TracesData); ok {
		r.traces = append(r.traces, td)
	}
}

func newOTLPReceiver(t testing.TB) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{Addr: ln.Addr().String()}
	srv := grpc.NewServer()
	srv.RegisterService(exportService("opentelemetry.proto.collector.trace.v1.TraceService",
		func() proto.Message { return &tracepb.TracesData{} }), r)
	srv.RegisterService(exportService("opentelemetry.proto.collector.metrics.v1.MetricsService",
		func() proto.Message { return &metricspb.MetricsData{} }), r)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() { srv.Stop(); <-served })
	return r
}

// receivedSpan is one span with the service.name of its resource.
type receivedSpan struct {
	*tracepb.Span
	service string
}

func (r *otlpReceiver) spans() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedSpan
	for _, req := range r.traces {
		for _, rs := range req.GetResourceSpans() {
			service, _ := attrValue(rs.GetResource().GetAttributes(), "service.name")
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, receivedSpan{Span: s, service: service})
				}
			}
		}
	}
	return out
}

// serialized renders every export request as protobuf JSON and as the
// protobuf wire bytes, for the secret scan.
func (r *otlpReceiver) serialized(t testing.TB) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, m := range r.exports {
		j, err := protojson.Marshal(m)
		if err != nil {
			t.Errorf("protojson: %v", err)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Errorf("proto: %v", err)
		}
		out = append(out, j, b)
	}
	return out
}

// attrValue renders an attribute's value as a string; ok is false when
// the key is absent.
func attrValue(kvs []*commonpb.KeyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.GetKey() != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue, true
		case *commonpb.AnyValue_IntValue:
			return strconv.FormatInt(v.IntValue, 10), true
		case *commonpb.AnyValue_BoolValue:
			return strconv.FormatBool(v.BoolValue), true
		default:
			return fmt.Sprint(kv.GetValue()), true
		}
	}
	return "", false
}

// traceparent splits a W3C traceparent into its trace ID and parent ID.
func traceparent(h string) (traceID, parentID string, err error) {
	f := strings.Split(h, "-")
	if len(f) != 4 || f[0] != "00" || len(f[1]) != 32 || len(f[2]) != 16 || len(f[3]) != 2 {
		return "", "", fmt.Errorf("malformed traceparent %q", h)
	}
	return f[1], f[2], nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// TestTraceExport points sidekey at an in-process OTLP/gRPC collector and
// checks the spans of proxied requests, with and without an incoming
// traceparent: a server span and a client span under it, the traceparent
// the upstream received, the credential attributes, the audit line's
// trace_id, a credential.rotate span, and no secret in anything exported.
func TestTraceExport(t *testing.T) {
	t.Parallel()
	recv := newOTLPReceiver(t)
	dir := dataDir(t)
	path := filepath.Join(dir, "tok")
	writeSecretFile(t, path, secretValue(t))
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"telemetry:", "  otlp_endpoint: " + quote(recv.Addr), "  service_name: sidekey-e2e"},
		[]string{fileCred("tt", path)},
		[]route{{name: "t", prefix: "/t/", upstream: up.URL, strip: true, inject: "{credential: tt, as: bearer}"}}),
		// The batch span processor's delay, so spans arrive within the test.
		withEnv("OTEL_BSP_SCHEDULE_DELAY=100"))
	if _, err := p.waitLog(5*time.Second, func(e map[string]any) bool { return e["msg"] == "tracing on" }); err != nil {
		t.Errorf("no \"tracing on\" line: %v", err)
	}
	waitOK(t, p, "/t/ready")
	cred := credentialOf(t, p, "tt")

	incomingTrace, incomingParent := randomHex(16), randomHex(8)
	cases := []struct {
		name   string
		header []string
	}{
		{"no traceparent", nil},
		{"incoming traceparent", []string{"traceparent", "00-" + incomingTrace + "-" + incomingParent + "-01"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprintf("trace-%d-%s", i, nextID())
			resp, body := p.get(t, "/t/"+id, append([]string{"X-Test-Id", id}, c.header...)...)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, maskSecrets(string(body)))
			}
			seen, ok := up.byID(id)
			if !ok {
				t.Fatal("the upstream did not get the request")
			}
			if n := len(seen.Header.Values("Traceparent")); n != 1 {
				t.Fatalf("the upstream got %d traceparent headers, want 1", n)
			}
			traceID, parentID, err := traceparent(seen.Header.Get("Traceparent"))
			if err != nil {
				t.Fatal(err)
			}
			if c.header != nil && traceID != incomingTrace {
				t.Errorf("upstream trace ID %s, want the incoming %s", traceID, incomingTrace)
			}

			var server, client receivedSpan
			eventually(t, 10*time.Second, "a server and a client span for trace "+traceID, func() error {
				server, client = receivedSpan{}, receivedSpan{}
				kinds := map[tracepb.Span_SpanKind]int{}
				for _, s := range recv.spans() {
					if hex.EncodeToString(s.GetTraceId()) != traceID {
						continue
					}
					kinds[s.GetKind()]++
					switch s.GetKind() {
					case tracepb.Span_SPAN_KIND_SERVER:
						server = s
					case tracepb.Span_SPAN_KIND_CLIENT:
						client = s
					}
				}
				if kinds[tracepb.Span_SPAN_KIND_SERVER] != 1 || kinds[tracepb.Span_SPAN_KIND_CLIENT] != 1 {
					return fmt.Errorf("spans of the trace by kind: %v, want one server and one client span", kinds)
				}
				return nil
			})
			if got := hex.EncodeToString(client.GetSpanId()); got != parentID {
				t.Errorf("the upstream's traceparent names parent %s, want the client span %s", parentID, got)
			}
			if !bytes.Equal(client.GetParentSpanId(), server.GetSpanId()) {
				t.Errorf("client span's parent %x, want the server span %x", client.GetParentSpanId(), server.GetSpanId())
			}
			wantParent := ""
			if c.header != nil {
				wantParent = incomingParent
			}
			if got := hex.EncodeToString(server.GetParentSpanId()); got != wantParent {
				t.Errorf("server span's parent %q, want %q", got, wantParent)
			}
			if server.service != "sidekey-e2e" {
				t.Errorf("service.name %q, want sidekey-e2e", server.service)
			}
			want := map[string]string{
				"sidekey.route":                  "t",
				"sidekey.credential":             "tt",
				"sidekey.credential.version":     strconv.FormatUint(cred.Version, 10),
				"sidekey.credential.fingerprint": cred.Fingerprint,
			}
			for k, v := range want {
				if got, ok := attrValue(server.GetAttributes(), k); !ok || got != v {
					t.Errorf("server span attribute %s = %q (present %v), want %q", k, got, ok, v)
				}
			}
			if got, _ := attrValue(client.GetAttributes(), "sidekey.route"); got != "t" {
				t.Errorf("client span attribute sidekey.route = %q, want t", got)
			}

			line, err := p.waitLog(10*time.Second, func(e map[string]any) bool {
				path, _ := e["path"].(string)
				return e["msg"] == "request" && strings.Contains(path, id)
			})
			if err != nil {
				t.Fatalf("no audit line for %s: %v", id, err)
			}
			if line["trace_id"] != traceID {
				t.Errorf("audit line trace_id %v, want %s", line["trace_id"], traceID)
			}
		})
	}

	t.Run("rotation span", func(t *testing.T) {
		writeSecretFile(t, path, secretValue(t))
		code, body := p.admin(t, http.MethodPost, "/v1/credentials/tt/rotate", "")
		if code != http.StatusOK {
			t.Fatalf("rotate = %d: %s", code, maskSecrets(string(body)))
		}
		version := strconv.FormatUint(credentialOf(t, p, "tt").Version, 10)
		if version == strconv.FormatUint(cred.Version, 10) {
			t.Fatalf("version still %s after a new value and a rotate", version)
		}
		eventually(t, 10*time.Second, "a credential.rotate span for version "+version, func() error {
			var seen []string
			for _, s := range recv.spans() {
				if s.GetName() != "credential.rotate" {
					continue
				}
				c, _ := attrValue(s.GetAttributes(), "credential")
				v, _ := attrValue(s.GetAttributes(), "version")
				r, _ := attrValue(s.GetAttributes(), "result")
				if c == "tt" && v == version && r == "success" {
					return nil
				}
				seen = append(seen, fmt.Sprintf("%s v%s %s", c, v, r))
			}
			return fmt.Errorf("rotate spans seen: %v", seen)
		})
	})

	// SIGTERM flushes what is still batched; then everything exported is
	// searched for every secret the suite generated.
	p.Client.CloseIdleConnections()
	code, ok := p.terminate(20 * time.Second)
	p.asserted.Store(true)
	if !ok || code != 0 {
		t.Errorf("sidekey exit after SIGTERM: code %d, in time %v; want 0", code, ok)
	}
	exports := recv.serialized(t)
	if len(exports) == 0 {
		t.Fatal("the collector received nothing")
	}
	secrets := snapshotSecrets()
	for i, data := range exports {
		recordCapture(fmt.Sprintf("OTLP export #%d in %s", i/2, t.Name()), data)
		for j, s := range secrets {
			if bytes.Contains(data, []byte(s.value)) {
				t.Errorf("secret #%d (generated by %s) found in OTLP export #%d", j, s.origin, i/2)
			}
		}
	}
	t.Logf("%d spans in %d export requests searched for %d secrets", len(recv.spans()), len(exports)/2, len(secrets))
}
