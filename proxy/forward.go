package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/sidekey/sidekey/injector"
)

// exchange is per-request scratch space, pooled so that the request path
// allocates nothing in steady state. It never outlives its handler call.
type exchange struct {
	rec    record
	edit   requestEditor
	buf    []byte // injection scratch
	path   []byte // rewritten upstream path
	log    []byte // logged path
	cpath  []byte // the app's path, canonical (canonicalPath): routed on and forwarded
	rid    []byte // request ID: the app's, or one generated for it
	ridApp bool   // rid is the app's own, still in its request
	hops   uint16 // hopMask of the app's request
	line   []byte // audit line
	body   []byte // the app's request body, when read whole
	tok    []byte // a caller token decoded from Basic credentials
	origin []byte // the app's Origin, copied
	site   []byte // the app's Sec-Fetch-Site, copied
	cors   bool   // the request came from an allowed origin: the answer says so

	appHost []byte       // the Host the app called, copied before the request is rewritten
	tls     bool         // the app called over TLS
	unix    bool         // the app called over a unix socket
	h2      bool         // the app called over HTTP/2 (through the bridge)
	upload  *appBody     // the app's streamed body, as sent upstream; nil when read whole
	pairs   []headerPair // response header pass (fixResponseHeaders)
	hbuf    []byte       // its scratch space
}

var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// handle is the app-facing request handler.
func (p *Proxy) handle(ctx *fasthttp.RequestCtx) {
	if ac, ok := ctx.Conn().(activeConn); ok {
		ac.activate() // its first request is in: no longer displaceable, no header clamp
	}
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	x := exchanges.Get().(*exchange)
	defer x.put()
	rec := &x.rec
	*rec = record{start: ctx.Time(), upstream: -1, tid: rec.tid}
	if p.opts.Tracing != nil && p.opts.Tracing.Enabled() {
		p.startServerSpan(ctx, rec)
	}
	// The ID is copied to x.rid, not kept as a slice of the header: header
	// edits reuse the memory of a deleted header's value.
	scanRequest(&ctx.Request.Header, x)
	x.h2 = isHTTP2(&ctx.Request)
	x.ridApp = len(x.rid) > 0
	if !x.ridApp {
		x.rid = p.rids.append(x.rid)
	}
	rec.rid = x.rid
	t := p.table.Load()
	p.forward(ctx, t, x, rec)
	if rec.upstream < 0 { // answered without an upstream call
		rec.elapsed = time.Since(rec.start)
	}
	status := ctx.Response.StatusCode()
	p.observe(t, rec, status)
	rec.endServerSpan(status)
	p.audit(ctx, x)
	rec.release() // after the audit line and span have read the version
}

// observe records the request's metrics under its route, or "none".
func (p *Proxy) observe(t *table, rec *record, status int) {
	rm := t.none
	if rec.route != nil {
		rm = rec.route.metrics
	}
	if rm != nil {
		rm.Observe(status, rec.elapsed, rec.upstream)
	}
}

// record is what the audit line, metrics and spans report about one
// request. It lives in the pooled exchange.
type record struct {
	start    time.Time
	elapsed  time.Duration // from start to the upstream's answer, or to the end when there was no upstream call
	upstream time.Duration // time in the upstream call; <0: none
	route    *route
	caller   *caller           // nil: anonymous, or refused before identified
	cred     *routeCred        // the credential injected for the request, if any
	version  *injector.Version // the version the request holds; released at the end
	path     []byte
	rid      []byte
	retried  bool
	tctx     context.Context // server span context, when tracing
	span     trace.Span
	tid      [32]byte // trace ID hex, for the audit line
}

func (r *record) release() {
	if r.version != nil {
		r.version.Release()
	}
}

func (p *Proxy) forward(ctx *fasthttp.RequestCtx, t *table, x *exchange, rec *record) {
	req := &ctx.Request
	if code := t.admitBrowser(ctx, x); code != "" {
		p.refuse(ctx, code, nil)
		return
	}
	if x.cors && isPreflight(ctx, x) {
		answerPreflight(ctx, x)
		return
	}
	rt, status, code := t.pick(req, x)
	if rt == nil {
		writeError(ctx, status, code, "")
		return
	}
	rec.route = rt
	if t.callers.enabled() {
		c, code := p.callerOf(ctx, t, x, rt)
		if code != "" {
			p.refuse(ctx, code, c)
			return
		}
		rec.caller = c
	}
	if x.h2 && !rt.speaksH2() && isGRPC(&req.Header) {
		// gRPC needs HTTP/2 end to end; an HTTP/1.1 upstream cannot carry it.
		writeError(ctx, fasthttp.StatusBadGateway, codeNeedsHTTP2, "")
		return
	}
	if req.IsBodyStream() {
		if cl := req.Header.ContentLength(); cl >= 0 && cl <= bufferedBodyMax {
			if err := x.readBody(req, cl); err != nil {
				p.opts.Log.WithField("route", rt.name).WithError(err).Debug("reading the request body failed")
				writeError(ctx, fasthttp.StatusBadRequest, codeBadRequest, "")
				ctx.SetConnectionClose()
				return
			}
		} else {
			// A streamed upload may outlast the server's read timeout, which
			// exists to bound slow headers; the route timeout bounds the rest.
			_ = ctx.SetReadDeadline(time.Time{})
			// A small gRPC call is kept as it goes, to be sent again after
			// an UNAUTHENTICATED answer once the app has sent it whole.
			// Its own, not the pooled exchange's: an HTTP/2 upstream may go
			// on reading it after the handler (full duplex), until the
			// response body is closed.
			x.upload = &appBody{r: req.BodyStream(), left: int64(req.Header.ContentLength()),
				keep: rt.cred != nil && isGRPC(&req.Header)}
			if x.upload.keep {
				x.upload.eof = make(chan struct{})
			}
			req.SetBodyStream(x.upload, req.Header.ContentLength())
		}
	}
	if rec.cred = rt.credFor(rec.caller); rec.cred != nil {
		v, err := rec.cred.holder.Acquire()
		if err != nil {
			writeError(ctx, fasthttp.StatusServiceUnavailable, codeUnavailable, rec.cred.name)
			return
		}
		rec.version = v // released by handle
	}
	// The app's wish to close its connection (Connection: close, HTTP/1.0)
	// is its own: the upstream connection stays in the pool.
	clientClose := req.Header.ConnectionClose()
	req.Header.ResetConnectionClose()
	x.tls = ctx.IsTLS()
	_, x.unix = ctx.LocalAddr().(*net.UnixAddr)
	upgrade := x.hops&hopConnection != 0 && isUpgrade(&req.Header)
	x.prepare(req, rt, upgrade, rec)
	if rt.signBody {
		if err := bufferBody(req); errors.Is(err, errBodyTooLarge) {
			writeError(ctx, fasthttp.StatusRequestEntityTooLarge, codeBodyTooLarge, "")
			return
		} else if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, codeBadRequest, "")
			ctx.SetConnectionClose()
			return
		}
	}
	if rec.version != nil {
		x.buf = rt.form.Apply(&x.edit, rec.version.Secret(), x.buf)
	}
	if upgrade {
		if err := p.tunnel(ctx, rt); err != nil {
			status, code := errorStatus(err)
			writeError(ctx, status, code, "")
		}
		return
	}
	p.exchange(ctx, x, rt, rec)
	if p.opts.Retired != nil && p.opts.Retired(ctx.Conn()) {
		ctx.SetConnectionClose()
	}
	if clientClose {
		ctx.SetConnectionClose()
	}
}

// exchange sends the prepared request upstream and leaves the answer, or a
// JSON error, in ctx.Response. A streamed upstream body is handed to the
// server, which writes it after the handler returns and then closes it.
func (p *Proxy) exchange(ctx *fasthttp.RequestCtx, x *exchange, rt *route, rec *record) {
	resp := &ctx.Response
	span := p.startClientSpan(&ctx.Request, rt, rec)
	replay := replayable(&ctx.Request, rec)
	start := time.Now()
	// The route timeout is enforced per read and write by idleConn.
	err := rt.do(&ctx.Request, resp)
	if err == nil && resp.StatusCode() == fasthttp.StatusUnauthorized && replay {
		err = p.retryUnauthorized(ctx, x, rt, rec)
	} else if err == nil && rec.version != nil && !rec.retried && grpcUnauthenticatedAnswer(resp) && x.upload.sentWhole() {
		ctx.Request.SetBodyRaw(x.upload.kept) // a small unary call, sent whole: once more
		err = p.retryUnauthorized(ctx, x, rt, rec)
	}
	// The monotonic clock alone, cheaper than a second time.Now; the time of
	// the answer is derived from these durations when the audit line needs it.
	rec.upstream = time.Since(start)
	rec.elapsed = start.Sub(rec.start) + rec.upstream
	endClientSpan(span, resp.StatusCode(), err)
	if err != nil && x.upload != nil && x.upload.err != nil {
		// The app's body broke off (a malformed chunk, a body shorter than
		// its length): its error, not the upstream's. The upstream connection,
		// holding part of a request, was closed, and so is the app's.
		p.opts.Log.WithField("route", rt.name).WithError(x.upload.err).Debug("reading the request body failed")
		writeError(ctx, fasthttp.StatusBadRequest, codeBadRequest, "")
		ctx.SetConnectionClose()
		return
	}
	if err != nil {
		status, code := errorStatus(err)
		p.opts.Log.WithField("route", rt.name).WithError(err).Debug("upstream request failed")
		writeError(ctx, status, code, "")
		return
	}
	stripResponseHops(&resp.Header)
	p.fixResponseHeaders(ctx, x, rt)
	if x.cors {
		allowOrigin(&resp.Header, x.origin)
	}
	if resp.IsBodyStream() {
		resp.ImmediateHeaderFlush = true
		// Straight to the connection on HTTP/1.1 only: an HTTP/2
		// connection is shared by streams, which its server frames.
		if d, ok := resp.BodyStream().(directBody); ok && resp.Header.ContentLength() >= 0 && !x.h2 {
			d.writeDirect(ctx.Conn())
		}
	}
}

// readBody reads a request body of known length cl, at most
// bufferedBodyMax, into x.body and makes it the request's body. fasthttp
// hands every body over as a stream once StreamRequestBody is on, even one
// it read whole with the headers (up to 8 KiB); read whole, the request can
// be sent again after a 401 and goes upstream in one write. A body beyond
// what came with the headers is read from the app under the server's read
// timeout, which is still armed. The request refers to x.body until the
// server resets it after the handler, and nothing reads it in between, so
// x can go back to the pool when the handler returns.
func (x *exchange) readBody(req *fasthttp.Request, cl int) error {
	if cap(x.body) < cl {
		x.body = make([]byte, cl)
	}
	b := x.body[:cl]
	if _, err := io.ReadFull(req.BodyStream(), b); err != nil {
		return err
	}
	req.SetBodyRaw(b)
	return nil
}

// appBody is the app's streamed request body on its way upstream. It keeps
// the first error reading it, so that a broken body is told apart from a
// broken upstream.
type appBody struct {
	r    io.Reader
	left int64 // bytes still due of a body with a length; <0: chunked
	err  error
	// keep: the body read so far is kept in kept, up to bufferedBodyMax
	// (past it, over), and eof closes when it was read whole. An HTTP/2
	// upstream reads it on a goroutine of its own, hence the channel.
	keep, over bool
	kept       []byte
	eof        chan struct{}
}

func (b *appBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if b.keep && !b.over {
		if len(b.kept)+n > bufferedBodyMax {
			b.over, b.kept = true, b.kept[:0]
		} else {
			b.kept = append(b.kept, p[:n]...)
		}
	}
	if err == io.EOF && b.eof != nil {
		select {
		case <-b.eof:
		default:
			close(b.eof)
		}
	}
	if b.left >= 0 {
		b.left -= int64(n)
		if err == io.EOF && b.left > 0 {
			err = io.ErrUnexpectedEOF // the app sent less than it announced
		}
	}
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// sentWhole reports a kept body read to its end: a unary gRPC call, which
// can be sent again. The upstream answered, so its transport has read the
// call or is about to see its end: that is waited for, briefly; a stream
// still open is not replayed.
func (b *appBody) sentWhole() bool {
	if b == nil || !b.keep {
		return false
	}
	select {
	case <-b.eof:
		return !b.over
	case <-time.After(sentWholeWait):
		return false
	}
}

// sentWholeWait bounds the wait for a unary call's end after its answer.
const sentWholeWait = 50 * time.Millisecond

// keptBody is the largest body buffer an exchange keeps for the next
// request; a larger one, read for a larger body, goes to the collector.
const keptBody = 8 << 10

// put returns x to the pool.
func (x *exchange) put() {
	x.upload = nil
	// The injection scratch held the credential as sent ("Bearer ...",
	// Basic's encoding), and tok a decoded caller token: wiped, not left
	// for the next request to overwrite.
	clear(x.buf[:cap(x.buf)])
	clear(x.tok[:cap(x.tok)])
	if cap(x.body) > keptBody {
		x.body = nil
	}
	exchanges.Put(x)
}

// prepare rewrites the app's request in place for the upstream: hop-by-hop
// and credential-carrying headers out, path rewritten, Host set, a request ID
// forwarded. It records the app's path (query without the injected parameter)
// for the audit line.
func (x *exchange) prepare(req *fasthttp.Request, rt *route, upgrade bool, rec *record) {
	x.edit.r, x.edit.scheme = req, rt.scheme
	x.appHost = append(x.appHost[:0], req.Header.Host()...)
	if x.h2 {
		req.Header.SetProtocol("HTTP/1.1") // as it goes upstream; the audit line names HTTP/2.0
	}
	req.Header.SetNoDefaultContentType(true)
	stripRequestHops(&req.Header, x.hops, upgrade)
	if rt.form != nil {
		rt.form.Strip(&x.edit)
	}
	if rt.bodyScrub != nil {
		askIdentity(req)
	}
	uri := req.URI()
	x.log = append(x.log[:0], x.cpath...)
	if q := uri.QueryString(); len(q) > 0 {
		x.log = append(append(x.log, '?'), q...)
	}
	rec.path = x.log
	x.path = rt.upstreamPath(x.path[:0], x.cpath)
	// The path goes upstream as built, escapes and all: not decoded and
	// encoded again by fasthttp, which would turn "%2F" into "/".
	uri.DisablePathNormalizing = true
	uri.SetPathBytes(x.path)
	uri.SetScheme(rt.scheme) // the app spoke plain HTTP or TLS to sidekey; the upstream may differ
	uri.SetHost(rt.upHost)
	req.Header.SetHost(rt.upHost)
	// The app's own ID is left in place, unless Connection may have listed
	// it (then it is set back); a generated one replaces an empty header or
	// is added. The name is canonical: no normalising.
	if !x.ridApp || x.hops&hopConnection != 0 {
		req.Header.SetCanonical(headerRequestIDKey, rec.rid)
	}
}

const headerRequestID = "X-Request-Id"

var headerRequestIDKey = []byte(headerRequestID)

// upstreamPath appends the upstream path for an app path to dst: the
// upstream's base path, then the app path with the route prefix stripped
// when the route says so.
func (rt *route) upstreamPath(dst, path []byte) []byte {
	dst = append(dst, rt.basePath...)
	if rt.strip {
		if len(path) >= len(rt.prefix) {
			path = path[len(rt.prefix):]
		} else {
			path = nil
		}
	}
	if len(path) == 0 || path[0] != '/' {
		dst = append(dst, '/')
	}
	return append(dst, path...)
}

// pick finds the route for a request, or the status and code to refuse it
// with; it leaves the request's canonical path in x.cpath. An absolute-form request is served only when its host is a route's
// host: the app-facing listener is never an open proxy.
func (t *table) pick(req *fasthttp.Request, x *exchange) (*route, int, string) {
	if req.Header.IsConnect() {
		return nil, fasthttp.StatusMethodNotAllowed, codeMethod
	}
	if conflictingFraming(&req.Header) {
		return nil, fasthttp.StatusBadRequest, codeBadRequest
	}
	uri := req.URI()
	var err error
	if x.cpath, err = canonicalPath(x.cpath[:0], uri.PathOriginal()); err != nil {
		return nil, fasthttp.StatusBadRequest, codeBadRequest
	}
	if isAbsoluteForm(req.Header.RequestURI()) && !t.router.hasHost(uri.Host()) {
		return nil, fasthttp.StatusForbidden, codeNotProxy
	}
	rt := t.router.match(uri.Host(), x.cpath)
	if rt == nil {
		return nil, fasthttp.StatusNotFound, codeNoRoute
	}
	return rt, 0, ""
}

func isAbsoluteForm(uri []byte) bool {
	return len(uri) > 0 && uri[0] != '/' && !bytes.Equal(uri, []byte("*"))
}
