package proxy

import (
	"github.com/valyala/fasthttp"
)

// The request path's gate: the Host and browser defence and the caller
// check, on a fasthttp request. The policies themselves (admission,
// callerTable) work on plain values.

// hopProxyAuthorization is hopMask's bit for Proxy-Authorization.
var hopProxyAuthorization = hopBit([]byte("Proxy-Authorization"))

// admitBrowser applies the Host and browser defence; it returns the
// refusal code, or "". A CONNECT or absolute-form request is left to pick,
// which serves it only for a route's host. Inside a tunnel the forward
// proxy intercepted, the host must be the tunnel's own.
func (t *table) admitBrowser(ctx *fasthttp.RequestCtx, x *exchange) string {
	h := &ctx.Request.Header
	if ic, ok := ctx.Conn().(*interceptedConn); ok {
		if !ic.admits(ctx.Request.URI().Host()) {
			return codeHostNotAllowed
		}
	} else if !h.IsConnect() && !isAbsoluteForm(h.RequestURI()) && !t.admit.hostAllowed(h.Host(), ctx.LocalAddr()) {
		return codeHostNotAllowed
	}
	if len(x.origin) == 0 && len(x.site) == 0 {
		return ""
	}
	if t.admit.crossOrigin(x.origin, x.site, ctx.Request.Header.Host(), ctx.IsTLS()) {
		return codeCrossOrigin
	}
	x.cors = len(x.origin) > 0 && t.admit.allowedOrigin(x.origin)
	return ""
}

// callerOf identifies the request's caller and checks that the route
// admits it; it returns the caller (nil: anonymous) or the refusal code,
// with the caller when one was identified but is not admitted.
func (p *Proxy) callerOf(ctx *fasthttp.RequestCtx, t *table, x *exchange, rt *route) (*caller, string) {
	var pr presented
	req := &ctx.Request
	if x.hops&hopProxyAuthorization != 0 {
		pr.proxy, x.tok = proxyAuthToken(req.Header.Peek(fasthttp.HeaderProxyAuthorization), x.tok)
		if pr.proxy == nil {
			return nil, codeUnauthn // present, but neither Bearer nor Basic with a password
		}
	} else if tok := tunnelToken(ctx.Conn()); tok != nil {
		pr.proxy = tok // the intercepted tunnel's CONNECT named the caller
	} else {
		pr.place, x.tok = rt.place.token(req, x.tok)
	}
	if id, ok := ctx.Conn().(connIdentity); ok {
		pr.conn = id
	}
	c, code := t.callers.identify(&pr)
	switch {
	case code != "":
		return nil, code
	case !rt.admits(c) && c == nil:
		return nil, codeUnauthn
	case !rt.admits(c):
		return c, codeCallerRefused
	}
	if c != nil {
		c.stats.requests.Add(1)
		c.stats.seen(ctx.Time())
	}
	return c, ""
}

// refuse answers a request the gate turned away and counts it: under its
// reason, and for the caller when one was identified. A refused request
// never reaches an upstream.
func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, code string, c *caller) {
	status := fasthttp.StatusForbidden
	switch code {
	case codeHostNotAllowed:
		status = fasthttp.StatusMisdirectedRequest
	case codeUnauthn:
		status = fasthttp.StatusUnauthorized
	}
	writeError(ctx, status, code, "")
	if code == codeUnauthn {
		if fs, ok := ctx.Conn().(forwardSide); ok {
			fs.proxyAuthRequired(ctx) // 407 on the forward proxy
		} else {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="sidekey"`)
		}
	}
	if c != nil {
		c.stats.refused.Add(1)
	}
	if n := p.refused[code]; n != nil {
		n.Inc()
	}
}

// isPreflight reports a CORS preflight: OPTIONS from an origin, asking
// whether a method may be used.
func isPreflight(ctx *fasthttp.RequestCtx, x *exchange) bool {
	return ctx.IsOptions() && len(x.origin) > 0 &&
		len(ctx.Request.Header.Peek(fasthttp.HeaderAccessControlRequestMethod)) > 0
}

// preflightMaxAge is how long a browser may cache a preflight's answer.
const preflightMaxAge = "600"

// answerPreflight answers a preflight from an allowed origin itself: the
// browser talks to sidekey's origin, so the upstream's own CORS policy is
// not what decides. It allows the method and headers asked for; the
// request that follows is still routed and checked like any other.
func answerPreflight(ctx *fasthttp.RequestCtx, x *exchange) {
	h := &ctx.Response.Header
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	allowOrigin(h, x.origin)
	h.SetBytesV(fasthttp.HeaderAccessControlAllowMethods, ctx.Request.Header.Peek(fasthttp.HeaderAccessControlRequestMethod))
	if rh := ctx.Request.Header.Peek(fasthttp.HeaderAccessControlRequestHeaders); len(rh) > 0 {
		h.SetBytesV(fasthttp.HeaderAccessControlAllowHeaders, rh)
	}
	h.Set(fasthttp.HeaderAccessControlMaxAge, preflightMaxAge)
}

// allowOrigin tells the browser that origin may read the answer.
func allowOrigin(h *fasthttp.ResponseHeader, origin []byte) {
	h.SetBytesV(fasthttp.HeaderAccessControlAllowOrigin, origin)
	h.Add(fasthttp.HeaderVary, "Origin")
}
