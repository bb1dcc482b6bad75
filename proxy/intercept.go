package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/telemetry"
)

// intercept serves a CONNECT to a route host: it answers 200, terminates
// the client's TLS with a leaf for the host and hands the TLS connection
// to the proxy's own server, on the app-facing request path. tok is the
// CONNECT's caller token (nil: none), c its caller.
func (f *Forward) intercept(ctx *fasthttp.RequestCtx, pol *forwardPolicy, t target, tok []byte, c *caller) {
	if !pol.ca.Ready() {
		writeError(ctx, fasthttp.StatusServiceUnavailable, codeCAUnavailable, "")
		f.decided(ctx, telemetry.ForwardRefused, t.String(), codeCAUnavailable, nil)
		return
	}
	cfg, err := pol.ca.TLSConfig(t.host)
	if err != nil {
		f.refuseTarget(ctx, t, err)
		return
	}
	// h2 for the clients that offer it (gRPC needs HTTP/2 end to end), as
	// the app-facing TLS listener does; http/1.1 for the others.
	cfg.NextProtos = []string{"h2", "http/1.1"}
	f.decided(ctx, telemetry.ForwardIntercepted, t.String(), "", nil)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(conn net.Conn) { f.serveIntercepted(conn, cfg, t, tok) })
}

// serveIntercepted runs on the hijacked connection until it closes: the
// 200, the handshake (within the header timeout: a client that answers
// the 200 with nothing is dropped as one that sent no request), then the
// proxy's server.
func (f *Forward) serveIntercepted(conn net.Conn, cfg *tls.Config, t target, tok []byte) {
	if _, err := io.WriteString(conn, connectEstablished); err != nil {
		return
	}
	_ = conn.SetDeadline(time.Now().Add(f.p.opts.Limits.HeaderTimeout))
	tc := tls.Server(conn, cfg)
	if err := tc.Handshake(); err != nil {
		// Most often a client that does not trust the CA yet: the
		// commonest set-up problem, so said at info.
		f.p.opts.Log.WithField("target", t.String()).WithError(err).Info("forward proxy: TLS handshake of an intercepted connection failed")
		return
	}
	_ = conn.SetDeadline(time.Time{})
	if f.closed.Load() {
		_ = tc.Close()
		return
	}
	ic := &interceptedConn{Conn: tc, raw: rawConn(conn), host: t.host, token: tok, done: make(chan struct{})}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		f.p.h2.serve(ic) // the same request path, through the HTTP/2 bridge
		return
	}
	_ = f.p.srv.ServeConn(ic)
	// ServeConn returns at once when a request inside hijacks the
	// connection (a websocket): its tunnel still runs, and the connection
	// underneath must stay open until that ends too.
	<-ic.done
}

// rawConn is the connection under a hijacked one, which Close really
// closes (fasthttp's own Close of a hijacked connection does nothing, and
// closes the connection only when the hijack handler returns).
func rawConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return c
}

// interceptedConn is a TLS connection intercepted by the forward proxy,
// served by the proxy's server: *tls.Conn's methods, so the request path
// sees TLS, and what the gate needs of the tunnel.
type interceptedConn struct {
	*tls.Conn
	raw   net.Conn // the forward listener's connection under the TLS
	host  string   // the CONNECT's host, canonical (target.host)
	token []byte   // the CONNECT's caller token; nil: none
	once  sync.Once
	done  chan struct{} // closed by Close
}

// Close closes the TLS connection and the connection under it, so that a
// server closing an idle connection (at shutdown) unblocks its read.
func (c *interceptedConn) Close() error {
	err := c.Conn.Close()
	_ = c.raw.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// admits reports whether a request inside the tunnel is for the tunnel's
// host (host: its URI's host, from the Host header or an absolute-form
// target; port ignored, as routing ignores it). A request for another host
// would be sent on to a destination the client did not CONNECT to, under
// a certificate for a name it never checked. Allocates nothing.
func (c *interceptedConn) admits(host []byte) bool {
	var buf [256]byte
	return string(bareHost(buf[:0], host)) == c.host
}

// proxyAuthRequired answers a request inside the tunnel that names no
// valid caller (its CONNECT's token has been rotated away, say) with 407,
// and closes the tunnel: the client's next CONNECT carries the caller of
// its proxy URL again.
func (c *interceptedConn) proxyAuthRequired(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusProxyAuthRequired)
	ctx.Response.Header.Set(fasthttp.HeaderProxyAuthenticate, proxyAuthHeader)
	ctx.SetConnectionClose()
}

// tunnelToken is the caller token that the CONNECT of an intercepted
// connection carried, which names the caller of every request inside that
// carries no Proxy-Authorization of its own; nil for any other
// connection.
func tunnelToken(c net.Conn) []byte {
	if ic, ok := c.(*interceptedConn); ok {
		return ic.token
	}
	return nil
}
