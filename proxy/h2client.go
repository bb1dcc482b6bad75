package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"

	"github.com/sidekey/sidekey/config"
)

// Routes whose protocol is h2, h2c or auto talk to their upstream through
// net/http's transports (x/net/http2's for h2 and h2c) instead of
// fasthttp's HostClient, which speaks HTTP/1.1 only. h2Client translates:
// it takes the request path's fasthttp request as prepared (credential
// injected, hop-by-hop headers gone) and fills its fasthttp response, the
// body streamed and the trailers given to it at the body's end, so that
// everything around the exchange (401 refresh, header fixing, audit,
// metrics, the HTTP/2 bridge) is the same for both.

// h2Client sends one route's requests. Safe for concurrent use.
type h2Client struct {
	rt      http.RoundTripper
	base    string        // scheme://host of the upstream, the request target appended
	timeout time.Duration // until the response head (the route timeout)
	idle    func()        // closes idle connections, to retire the client
}

// newH2Client builds the route's HTTP/2 client: its TLS configuration
// (pinned CA, client certificate callback) as the HTTP/1.1 client's, its
// connections through the route's dialer.
func (rt *route) newH2Client() *h2Client {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if rt.dialer != nil {
			return rt.dialer(addr)
		}
		return (&net.Dialer{Timeout: rt.dialTimeout()}).DialContext(ctx, "tcp", addr)
	}
	c := &h2Client{base: rt.scheme + "://" + rt.upHost, timeout: rt.timeout}
	switch rt.protocol {
	case config.ProtoH2C:
		t := &http2.Transport{AllowHTTP: true, ReadIdleTimeout: h2PingAfter,
			DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) { return dial(ctx, rt.addr) }}
		c.rt, c.idle = t, t.CloseIdleConnections
	case config.ProtoH2:
		cfg := rt.tls.Clone()
		cfg.NextProtos = []string{"h2"}
		t := &http2.Transport{TLSClientConfig: cfg, ReadIdleTimeout: h2PingAfter,
			DialTLSContext: func(ctx context.Context, _, _ string, cfg *tls.Config) (net.Conn, error) {
				return dialTLS(ctx, dial, rt.addr, cfg)
			}}
		c.rt, c.idle = t, t.CloseIdleConnections
	default: // auto: h2 when the upstream's ALPN offers it
		t := &http.Transport{TLSClientConfig: rt.tls.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
			IdleConnTimeout: 30 * time.Second, DisableCompression: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx, rt.addr) }}
		c.rt, c.idle = t, t.CloseIdleConnections
	}
	return c
}

// h2PingAfter is how long an upstream HTTP/2 connection may stay silent
// before it is pinged, and closed when the ping goes unanswered.
const h2PingAfter = 30 * time.Second

// dialTLS opens a TLS connection over dial and completes its handshake,
// requiring h2 to be negotiated.
func dialTLS(ctx context.Context, dial func(context.Context, string) (net.Conn, error), addr string, cfg *tls.Config) (net.Conn, error) {
	raw, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		tc.Close()
		return nil, errNoH2
	}
	return tc, nil
}

// errNoH2: an upstream of protocol h2 did not negotiate HTTP/2.
var errNoH2 = errors.New("the upstream did not negotiate h2")

// Do sends req and fills resp, as fasthttp.HostClient.Do does. A streamed
// response body holds the exchange open until the server closes it.
func (c *h2Client) Do(req *fasthttp.Request, resp *fasthttp.Response) error {
	hr, cancel, body, err := c.newRequest(req)
	if err != nil {
		return err
	}
	// The route timeout bounds the wait for the response head; a gRPC
	// call's own deadline (grpc-timeout) bounds the whole call.
	timer := time.AfterFunc(c.timeout, cancel)
	hresp, err := c.rt.RoundTrip(hr)
	if !timer.Stop() && err != nil {
		err = fasthttp.ErrTimeout
	}
	if err != nil {
		cancel()
		body.close()
		return err
	}
	fillResponse(resp, hresp, cancel, body)
	return nil
}

// newRequest turns the prepared fasthttp request into an http.Request.
func (c *h2Client) newRequest(req *fasthttp.Request) (*http.Request, context.CancelFunc, *sentBody, error) {
	u, err := url.Parse(c.base + string(req.URI().RequestURI()))
	if err != nil {
		return nil, nil, nil, err
	}
	parent := context.Background()
	if app, ok := req.UserValue(appStreamKey{}).(context.Context); ok {
		parent = app // the app's HTTP/2 stream: its end cancels the upstream's
	}
	ctx, cancel := context.WithCancel(parent)
	if d, ok := grpcTimeout(req.Header.Peek("Grpc-Timeout")); ok {
		ctx, cancel = withDeadline(ctx, cancel, d)
	}
	hr := &http.Request{Method: string(req.Header.Method()), URL: u, Host: string(req.Header.Host()),
		Header: make(http.Header), Proto: "HTTP/2.0", ProtoMajor: 2}
	hr = hr.WithContext(ctx)
	for k, v := range req.Header.All() {
		switch {
		case bytes.EqualFold(k, []byte("Host")), bytes.EqualFold(k, []byte("Content-Length")), connectionSpecific(k):
			continue
		}
		hr.Header.Add(string(k), string(v))
	}
	if isGRPC(&req.Header) {
		hr.Header.Set("Te", "trailers") // gRPC's servers require it; HTTP/1.1's hop-by-hop Te was removed
	}
	sb := &sentBody{}
	switch {
	case req.IsBodyStream():
		sb.r = req.BodyStream()
		hr.Body, hr.ContentLength = sb, int64(req.Header.ContentLength())
		if hr.ContentLength < 0 {
			hr.ContentLength = -1
		}
	case len(req.Body()) > 0:
		sb.r = bytes.NewReader(req.Body())
		hr.Body, hr.ContentLength = sb, int64(len(req.Body()))
	}
	return hr, cancel, sb, nil
}

// withDeadline bounds ctx by d more, cancelling both on cancel.
func withDeadline(ctx context.Context, cancel context.CancelFunc, d time.Duration) (context.Context, context.CancelFunc) {
	dctx, dcancel := context.WithTimeout(ctx, d)
	return dctx, func() { dcancel(); cancel() }
}

// grpcTimeout parses a grpc-timeout header: digits then a unit (H, M, S,
// m, u, n).
func grpcTimeout(v []byte) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v[:len(v)-1]), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// sentBody is the request body as the transport reads it. Once closed it
// is never read again, so the request's memory (a fasthttp request stream
// the server drains after the response) is not touched after the exchange.
type sentBody struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (b *sentBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.r == nil {
		return 0, io.EOF
	}
	return b.r.Read(p)
}

// Close is the transport's: it may come while the body is still wanted,
// so it changes nothing; close is the exchange's.
func (b *sentBody) Close() error { return nil }

func (b *sentBody) close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// fillResponse gives resp the upstream's answer: status, headers, the
// trailer fields it announced, and its body as a stream.
func fillResponse(resp *fasthttp.Response, hresp *http.Response, cancel context.CancelFunc, sent *sentBody) {
	resp.SetStatusCode(hresp.StatusCode)
	for k, vs := range hresp.Header {
		if k == "Content-Length" || connectionSpecific([]byte(k)) {
			continue
		}
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
	for k := range hresp.Trailer {
		_ = resp.Header.AddTrailer(k)
	}
	cl := int(hresp.ContentLength)
	if cl < 0 {
		cl = -1
	}
	resp.SetBodyStream(&receivedBody{hresp: hresp, resp: resp, cancel: cancel, sent: sent}, cl)
}

// receivedBody streams the upstream's body to the app; at its end the
// trailer fields, then at Close the exchange is over.
type receivedBody struct {
	hresp  *http.Response
	resp   *fasthttp.Response
	cancel context.CancelFunc
	sent   *sentBody
	eof    bool
}

func (b *receivedBody) Read(p []byte) (int, error) {
	n, err := b.hresp.Body.Read(p)
	if err == io.EOF && !b.eof {
		b.eof = true
		for k, vs := range b.hresp.Trailer {
			for _, v := range vs {
				_ = b.resp.Header.AddTrailer(k)
				b.resp.Header.Set(k, v)
			}
		}
	}
	return n, err
}

func (b *receivedBody) Close() error {
	err := b.hresp.Body.Close()
	b.cancel()
	b.sent.close()
	return err
}

// isGRPC reports a gRPC request or answer: content-type application/grpc,
// with or without a subtype (+proto) or parameters; not gRPC-Web.
func isGRPC(h interface{ ContentType() []byte }) bool {
	ct := h.ContentType()
	const g = "application/grpc"
	if len(ct) < len(g) || !bytes.EqualFold(ct[:len(g)], []byte(g)) {
		return false
	}
	return len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';'
}

// grpcUnauthenticatedAnswer reports an upstream's gRPC status 16 in a
// Trailers-Only answer (the head carries it).
func grpcUnauthenticatedAnswer(resp *fasthttp.Response) bool {
	return string(resp.Header.Peek("Grpc-Status")) == "16"
}
