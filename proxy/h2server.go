package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"

	"github.com/sidekey/sidekey/telemetry"
)

// HTTP/2 on the app-facing listeners: golang.org/x/net/http2 reads and
// writes the frames; every request goes through the same request path as
// an HTTP/1.1 one (Proxy.handle, with its routing, Host and browser
// defence, callers, credential, injection, 401 refresh, audit and metrics)
// by way of a bridge that hands it over as a fasthttp request and writes
// the fasthttp response back, streaming both bodies and carrying trailers.

// h2MaxStreams bounds the streams one connection may have open at once
// (the default of x/net/http2 and of most servers). It also bounds the
// handlers a rapid-reset flood (CVE-2023-44487) keeps busy: x/net/http2
// queues requests beyond it and answers a client that keeps resetting
// them with GOAWAY.
const h2MaxStreams = 250

// h2Server serves HTTP/2 connections. Safe for concurrent use.
type h2Server struct {
	p     *Proxy
	srv   *http2.Server
	hs    *http.Server // the base configuration; its Shutdown sends GOAWAY to every connection
	conns sync.WaitGroup
	ctxs  sync.Pool // *h2Exchange
}

func newH2Server(p *Proxy) *h2Server {
	h := &h2Server{p: p}
	// x/net/http2 reports a client's protocol errors through ErrorLog; nil
	// would write them to the standard logger, as lines of plain text on
	// stderr beside the JSON ones, unscrubbed, at a rate a client chooses.
	h.hs = &http.Server{MaxHeaderBytes: serverReadBuffer, ErrorLog: telemetry.StdLogger(p.opts.Log)}
	h.srv = &http2.Server{
		MaxConcurrentStreams: h2MaxStreams,
		IdleTimeout:          p.opts.Limits.IdleTimeout,
		MaxReadFrameSize:     1 << 20,
	}
	_ = http2.ConfigureServer(h.hs, h.srv) // registers the graceful shutdown of the connections served
	h.ctxs.New = func() any { return new(h2Exchange) }
	return h
}

// serve serves one HTTP/2 connection until it ends. The connection's read
// deadline, the header timeout until now, is the HTTP/2 server's from here
// (its preface and idle timeouts).
func (h *h2Server) serve(c net.Conn) {
	h.conns.Add(1)
	defer h.conns.Done()
	switch rc := c.(type) {
	case *inboundConn:
		_ = rc.Conn.SetReadDeadline(time.Time{})
	case *inboundTLSConn:
		_ = rc.Conn.SetReadDeadline(time.Time{})
	}
	h.srv.ServeConn(c, &http2.ServeConnOpts{
		Context:    context.Background(),
		BaseConfig: h.hs,
		Handler:    http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.request(w, r, c) }),
	})
	_ = c.Close()
}

// shutdown asks every HTTP/2 connection to finish (GOAWAY: no new streams,
// the open ones run to their end) and waits for them until ctx ends.
func (h *h2Server) shutdown(ctx context.Context) error {
	_ = h.hs.Shutdown(ctx)
	done := make(chan struct{})
	go func() {
		h.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// h2Exchange is one HTTP/2 request's bridge state, pooled.
type h2Exchange struct {
	ctx  fasthttp.RequestCtx
	head bytes.Buffer
	br   *bufio.Reader
	buf  []byte
}

// request serves one HTTP/2 request through the request path.
func (h *h2Server) request(w http.ResponseWriter, r *http.Request, c net.Conn) {
	e := h.ctxs.Get().(*h2Exchange)
	defer h.release(e)
	ctx := &e.ctx
	ctx.Init2(c, telemetry.Printf{Log: h.p.opts.Log}, false)
	if err := e.readRequest(r); err != nil {
		h.p.opts.Log.WithError(err).Debug("reading an HTTP/2 request failed")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"bad_request"}`+"\n")
		return
	}
	// An HTTP/2 upstream's request ends with the app's stream (a reset, a
	// gRPC call cancelled), not only at the route timeout.
	ctx.Request.SetUserValue(appStreamKey{}, r.Context())
	h.p.handle(ctx)
	e.writeResponse(w, r)
}

// appStreamKey holds, as a user value of a bridged request, the context of
// the app's HTTP/2 stream; the request's Reset drops it.
type appStreamKey struct{}

func (h *h2Server) release(e *h2Exchange) {
	_ = e.ctx.Response.CloseBodyStream()
	e.ctx.Request.Reset()
	e.ctx.Response.Reset()
	h.ctxs.Put(e)
}

// readRequest gives ctx.Request the HTTP/2 request: its head written out
// as HTTP/1.1 and read by fasthttp, so that it is parsed exactly as an
// HTTP/1.1 request is (the request path reads the raw header lines), then
// its body as a stream and HTTP/2.0 as its protocol.
func (e *h2Exchange) readRequest(r *http.Request) error {
	b := &e.head
	b.Reset()
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(r.RequestURI)
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(r.Host)
	b.WriteString("\r\n")
	for k, vs := range r.Header {
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	body := r.Body != nil && r.Body != http.NoBody
	if body && r.ContentLength >= 0 && r.Header.Get("Content-Length") == "" {
		b.WriteString("Content-Length: " + strconv.FormatInt(r.ContentLength, 10) + "\r\n")
	}
	b.WriteString("\r\n")
	if e.br == nil {
		e.br = bufio.NewReaderSize(b, serverReadBuffer)
	} else {
		e.br.Reset(b)
	}
	req := &e.ctx.Request
	if err := req.Header.Read(e.br); err != nil {
		return err
	}
	req.Header.SetProtocol(protoHTTP2)
	if body {
		// As a plain reader: the request path replaces the body (read whole,
		// or wrapped), and fasthttp closes a body it replaces; the HTTP/2
		// server's body must stay open until the handler is done.
		req.SetBodyStream(struct{ io.Reader }{r.Body}, int(r.ContentLength))
	}
	return nil
}

// protoHTTP2 is the protocol of a request that came over HTTP/2, as the
// audit line names it.
const protoHTTP2 = "HTTP/2.0"

// isHTTP2 reports a request the bridge handed over.
func isHTTP2(req *fasthttp.Request) bool {
	return string(req.Header.Protocol()) == protoHTTP2
}

// writeResponse writes the request path's answer to the HTTP/2 stream: the
// status and headers (without HTTP/1.1's connection-specific ones), the
// body as it comes, each piece flushed, then the trailer fields.
func (e *h2Exchange) writeResponse(w http.ResponseWriter, r *http.Request) {
	resp := &e.ctx.Response
	h := w.Header()
	for k, v := range resp.Header.All() {
		if connectionSpecific(k) {
			continue
		}
		h.Add(string(k), string(v))
	}
	var trailers []string
	for k := range resp.Header.Trailers() {
		trailers = append(trailers, string(k))
	}
	if len(trailers) > 0 {
		h["Trailer"] = trailers
	}
	w.WriteHeader(resp.StatusCode())
	if r.Method != http.MethodHead {
		e.writeBody(w, resp)
	}
	// The trailer fields, announced or not (gRPC's grpc-status is not):
	// the body's end gave them to resp.
	for k := range resp.Header.Trailers() {
		for _, v := range resp.Header.PeekAll(string(k)) {
			h.Add(http.TrailerPrefix+string(k), string(v))
		}
	}
}

// writeBody copies the body, flushing each piece: an event stream or a
// gRPC stream reaches the app as it comes.
func (e *h2Exchange) writeBody(w http.ResponseWriter, resp *fasthttp.Response) {
	if !resp.IsBodyStream() {
		_, _ = w.Write(resp.Body())
		return
	}
	f, _ := w.(http.Flusher)
	if cap(e.buf) < copyBufSize {
		e.buf = make([]byte, copyBufSize)
	}
	src := resp.BodyStream()
	for {
		n, err := src.Read(e.buf[:copyBufSize])
		if n > 0 {
			if _, werr := w.Write(e.buf[:n]); werr != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
		}
		if err != nil {
			return // io.EOF, or the upstream broke off: the stream is reset
		}
	}
}

// connectionSpecific reports the HTTP/1.1 headers HTTP/2 forbids (RFC
// 9113 section 8.2.2), and Trailer, which writeResponse declares itself.
func connectionSpecific(k []byte) bool {
	for _, name := range []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Trailer"} {
		if len(k) == len(name) && bytes.EqualFold(k, []byte(name)) {
			return true
		}
	}
	return false
}
