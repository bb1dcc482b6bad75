package proxy

import (
	"context"
	"strconv"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// headerCarrier adapts fasthttp request headers to OpenTelemetry's
// TextMapCarrier, for W3C trace-context extraction and injection.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c headerCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c headerCarrier) Keys() []string {
	var keys []string
	c.h.VisitAll(func(k, _ []byte) { keys = append(keys, string(k)) })
	return keys
}

// startServerSpan begins the span of one app request, continuing the app's
// trace when it sent a traceparent. Only called when tracing is on.
func (p *Proxy) startServerSpan(ctx *fasthttp.RequestCtx, rec *record) {
	t := p.opts.Tracing
	parent := t.Propagator().Extract(context.Background(), headerCarrier{&ctx.Request.Header})
	rec.tctx, rec.span = t.Tracer().Start(parent, "sidekey "+string(ctx.Method()),
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", string(ctx.Method())),
			attribute.String("url.path", string(ctx.Path())),
		))
}

// endServerSpan closes the server span with what the audit line knows.
func (rec *record) endServerSpan(status int) {
	if rec.span == nil {
		return
	}
	attrs := []attribute.KeyValue{attribute.Int("http.response.status_code", status)}
	if rt := rec.route; rt != nil {
		attrs = append(attrs, attribute.String("sidekey.route", rt.name))
		if rec.cred != nil {
			attrs = append(attrs, attribute.String("sidekey.credential", rec.cred.name))
		}
		if rec.caller != nil {
			attrs = append(attrs, attribute.String("sidekey.caller", rec.caller.name))
		}
		if v := rec.version; v != nil {
			attrs = append(attrs,
				attribute.String("sidekey.credential.version", strconv.FormatUint(v.Number(), 10)),
				attribute.String("sidekey.credential.fingerprint", v.Fingerprint()))
		}
	}
	rec.span.SetAttributes(attrs...)
	if status >= 500 {
		rec.span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	rec.span.End()
}

// startClientSpan begins the span of the upstream call and writes its
// traceparent into the outgoing request.
func (p *Proxy) startClientSpan(req *fasthttp.Request, rt *route, rec *record) trace.Span {
	if rec.span == nil {
		return nil
	}
	cctx, span := p.opts.Tracing.Tracer().Start(rec.tctx, "upstream "+rt.name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("server.address", rt.upHost),
			attribute.String("sidekey.route", rt.name),
		))
	p.opts.Tracing.Propagator().Inject(cctx, headerCarrier{&req.Header})
	return span
}

func endClientSpan(span trace.Span, status int, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "upstream error")
	} else {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	span.End()
}

// traceID is the request's trace ID for the audit line, or nothing.
func (rec *record) traceID() []byte {
	if rec.span == nil {
		return nil
	}
	id := rec.span.SpanContext().TraceID()
	if !id.IsValid() {
		return nil
	}
	return hexAppend(rec.tid[:0], id[:])
}

func hexAppend(dst, src []byte) []byte {
	const digits = "0123456789abcdef"
	for _, c := range src {
		dst = append(dst, digits[c>>4], digits[c&0xf])
	}
	return dst
}
