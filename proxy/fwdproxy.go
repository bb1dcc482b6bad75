package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/telemetry"
)

// The forward-proxy listener (forward_proxy.listen): HTTPS_PROXY and
// HTTP_PROXY for apps whose base URLs cannot change. It takes CONNECT and
// absolute-form requests only; what each may reach is the policy's
// (fwdpolicy.go).
//
// It adds no request path of its own. An absolute-form request for a route
// host goes to the proxy's handler as it is, on this listener's server. A
// CONNECT to a route host is answered 200, its TLS terminated with a leaf
// of the forward-proxy CA, and the TLS connection handed to the proxy's
// own server (ServeConn), where every request inside is routed, checked,
// injected, streamed, retried and audited exactly as on the app-facing
// listener. The connection types carry what the request path needs to know
// that a request came this way (forwardSide, interceptedConn): the tunnel's
// host, which every request inside must name, the caller token of the
// CONNECT, and the 407 answer to a request without a caller.

// LeafIssuer issues the certificates with which intercepted connections
// are terminated; *certs.ForwardCA implements it.
type LeafIssuer interface {
	// TLSConfig returns the server configuration for one intercepted
	// connection to host (canonical: lower case, an IP literal without
	// brackets), or an error for a host it does not issue for.
	TLSConfig(host string) (*tls.Config, error)
	// Ready reports whether it can issue trusted leaves now.
	Ready() bool
}

// ForwardOptions are the forward proxy's replaceable parts; the zero value
// is what production uses.
type ForwardOptions struct {
	// Resolver looks up tunnel destinations; nil: net.DefaultResolver.
	Resolver Resolver
	// Dial connects tunnels to the checked addresses ("tcp", "ip:port");
	// nil: a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Forward is the forward-proxy listener of a Proxy. Its policy (the route
// hosts, allow_tunnel, allow_addresses and the CA) is swapped atomically
// by Reload; its connections' requests use the proxy's current table.
type Forward struct {
	p       *Proxy
	opts    ForwardOptions
	policy  atomic.Pointer[forwardPolicy]
	srv     *fasthttp.Server
	counts  map[string]*telemetry.Counter // sidekey_forward_connects_total by result; empty without metrics
	tunnels tunnelSet
	closed  atomic.Bool
}

// Error codes of the forward-proxy listener.
const (
	codeProxyRequest  = "not_a_proxy_request"    // an origin-form request on the forward listener
	codeCAUnavailable = "forward_ca_unavailable" // the CA cannot issue leaves (expired)
)

// connectEstablished is the answer to a CONNECT that is served: no
// Content-Length or Transfer-Encoding, which a 2xx answer to CONNECT must
// not have (RFC 9110 section 9.3.6).
const connectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// NewForward builds the forward-proxy listener for cfg's forward_proxy
// section and route hosts, terminating intercepted TLS with leaves from ca
// (nil only when no route has a host).
func (p *Proxy) NewForward(cfg *config.Config, ca LeafIssuer, opts ForwardOptions) (*Forward, error) {
	f := &Forward{p: p, opts: opts, counts: map[string]*telemetry.Counter{}}
	if err := f.Reload(cfg, ca); err != nil {
		return nil, err
	}
	if m := p.opts.Metrics; m != nil {
		for _, r := range []string{telemetry.ForwardIntercepted, telemetry.ForwardTunnelled, telemetry.ForwardRefused} {
			f.counts[r] = m.ForwardConnects(r)
		}
	}
	f.srv = p.newServer(f.handle)
	return f, nil
}

// Reload swaps in cfg's policy and ca. Connections already intercepted
// keep their tunnel; their requests follow the proxy's own reloads. On
// error the current policy keeps serving.
func (f *Forward) Reload(cfg *config.Config, ca LeafIssuer) error {
	pol, err := newForwardPolicy(cfg, ca, f.opts)
	if err != nil {
		return err
	}
	f.policy.Store(pol)
	return nil
}

// Serve accepts connections on ln until Shutdown, within the limits (as
// the app-facing listener's, its own).
func (f *Forward) Serve(ln net.Listener) error {
	err := f.srv.Serve(forwardListener{f.p.inbound(ln)})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets absolute-form requests in flight finish
// until ctx ends, and closes the tunnels (allow_tunnel): a tunnel is
// opaque, so sidekey cannot tell a request in it from a keep-alive
// connection at rest. Intercepted connections are the proxy's: its own
// Shutdown drains them. Safe to call more than once.
func (f *Forward) Shutdown(ctx context.Context) error {
	f.closed.Store(true)
	err := f.srv.ShutdownWithContext(ctx)
	f.tunnels.closeAll()
	return err
}

// handle is the forward-proxy listener's request handler.
func (f *Forward) handle(ctx *fasthttp.RequestCtx) {
	if ac, ok := ctx.Conn().(activeConn); ok {
		ac.activate()
	}
	pol := f.policy.Load()
	h := &ctx.Request.Header
	switch {
	case h.IsConnect():
		f.connect(ctx, pol)
	case isAbsoluteForm(h.RequestURI()):
		f.absolute(ctx, pol)
	default:
		writeError(ctx, fasthttp.StatusBadRequest, codeProxyRequest, "")
		f.decided(ctx, telemetry.ForwardRefused, "", codeProxyRequest, nil)
	}
}

// absolute serves an absolute-form request (GET http://host/...) for a
// route host on the proxy's request path, and refuses any other.
func (f *Forward) absolute(ctx *fasthttp.RequestCtx, pol *forwardPolicy) {
	t, err := parseAbsoluteTarget(string(ctx.Request.Header.RequestURI()))
	if err != nil {
		f.refuseTarget(ctx, target{}, err)
		return
	}
	if !pol.serves(t) {
		f.refuseTarget(ctx, t, errNotAllowed)
		return
	}
	f.count(telemetry.ForwardIntercepted)
	f.p.handle(ctx)
}

// errNotAllowed: the destination is neither a route host nor listed in
// allow_tunnel.
var errNotAllowed = errors.New("not a route host, nor in allow_tunnel")

// connect answers a CONNECT: after the caller check, it intercepts a route
// host, tunnels what allow_tunnel lists, and refuses the rest.
func (f *Forward) connect(ctx *fasthttp.RequestCtx, pol *forwardPolicy) {
	t, err := parseConnectTarget(string(ctx.Request.Header.RequestURI()))
	if err != nil {
		f.refuseTarget(ctx, target{}, err)
		return
	}
	tok, c, ok := f.connectCaller(ctx)
	if !ok {
		f.decided(ctx, telemetry.ForwardRefused, t.String(), codeUnauthn, nil)
		return
	}
	switch {
	case pol.intercepts(t):
		f.intercept(ctx, pol, t, tok, c)
	case pol.tunnel.allows(t):
		f.tunnel(ctx, pol, t, c)
	default:
		f.refuseTarget(ctx, t, errNotAllowed)
	}
}

// connectCaller identifies the caller of a CONNECT by its
// Proxy-Authorization, as the request path would (callerTable.identify):
// with callers set, a CONNECT without a valid one is answered 407 and ok
// is false. tok is a copy of the token, to be checked again on each
// request inside an intercepted tunnel (caller tokens rotate); nil
// without one.
func (f *Forward) connectCaller(ctx *fasthttp.RequestCtx) (tok []byte, c *caller, ok bool) {
	t := f.p.table.Load()
	if !t.callers.enabled() {
		return nil, nil, true
	}
	var pr presented
	if v := ctx.Request.Header.Peek(fasthttp.HeaderProxyAuthorization); len(v) > 0 {
		if pr.proxy, _ = proxyAuthToken(v, nil); pr.proxy == nil {
			f.p.refuse(ctx, codeUnauthn, nil)
			return nil, nil, false
		}
	}
	c, code := t.callers.identify(&pr)
	if code != "" {
		f.p.refuse(ctx, code, nil)
		return nil, nil, false
	}
	if c != nil {
		c.stats.seen(ctx.Time())
	}
	return bytes.Clone(pr.proxy), c, true
}

// refuseTarget answers a destination that cannot be served: 400 for a
// malformed one, 403 destination_not_allowed for one the policy refuses
// (or that resolves into a forbidden range), 502 or 504 for one that
// cannot be reached. The answer never names an address.
func (f *Forward) refuseTarget(ctx *fasthttp.RequestCtx, t target, err error) {
	status, code := egressStatus(err)
	if errors.Is(err, errNotAllowed) {
		status, code = fasthttp.StatusForbidden, codeDestinationNotAllowed
	}
	writeError(ctx, status, code, "")
	dest := ""
	if t.port != 0 {
		dest = t.String()
	}
	f.decided(ctx, telemetry.ForwardRefused, dest, code, err)
}

func (f *Forward) count(result string) {
	if c := f.counts[result]; c != nil {
		c.Inc()
	}
}

// decided counts a forward-proxy decision and logs it: at info when the
// configuration asks for request lines (log.requests), else at debug. An
// intercepted connection's requests have audit lines of their own.
func (f *Forward) decided(ctx *fasthttp.RequestCtx, result, dest, code string, err error) {
	f.count(result)
	fields := logrus.Fields{"result": result, "method": string(ctx.Method())}
	if dest != "" {
		fields["target"] = dest
	}
	if code != "" {
		fields["error"] = code
		fields["status"] = ctx.Response.StatusCode()
	}
	if err != nil && !errors.Is(err, errNotAllowed) {
		fields["reason"] = err.Error()
	}
	e := f.p.opts.Log.WithFields(fields)
	if f.p.auditOn.Load() {
		e.Info("forward proxy")
	} else {
		e.Debug("forward proxy")
	}
}

// forwardListener hands out the forward-proxy listener's connections,
// marked as such (forwardConn), within the listener's limits.
type forwardListener struct{ *inboundListener }

func (l forwardListener) Accept() (net.Conn, error) {
	c, err := l.inboundListener.Accept()
	if err != nil {
		return nil, err
	}
	if ic, ok := c.(*inboundConn); ok {
		return &forwardConn{ic}, nil
	}
	return c, nil
}

// forwardConn is a connection to the forward-proxy listener.
type forwardConn struct{ *inboundConn }

// forwardSide is a connection that came through the forward proxy: one to
// its listener, or a tunnel intercepted on it. A request there without a
// caller is answered as a proxy answers: 407 with Proxy-Authenticate,
// which is what makes a client send the caller of its proxy URL.
type forwardSide interface {
	proxyAuthRequired(ctx *fasthttp.RequestCtx)
}

// proxyAuthHeader is the challenge of a 407.
const proxyAuthHeader = `Basic realm="sidekey"`

func (c *forwardConn) proxyAuthRequired(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusProxyAuthRequired)
	ctx.Response.Header.Set(fasthttp.HeaderProxyAuthenticate, proxyAuthHeader)
}

// tunnelSet is the connections of the tunnels open, both sides, so that
// Shutdown can close them.
type tunnelSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// add registers c; false once the set is closed (c is then closed).
func (s *tunnelSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *tunnelSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// open is how many tunnel connections are open.
func (s *tunnelSet) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *tunnelSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
}
