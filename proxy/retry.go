package proxy

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"
)

// refreshWait bounds how long a request waits for the forced refresh that an
// upstream 401 triggers.
const refreshWait = 10 * time.Second

// replayable reports, before a request is sent, whether it could be sent
// again after a 401: it carries a credential, was not retried yet, and its
// body is in memory. It must be asked before sending: sending a streamed
// body closes the stream, after which the request looks as if its body
// were the part fasthttp read with the headers.
func replayable(req *fasthttp.Request, rec *record) bool {
	return rec.version != nil && !rec.retried && !req.IsBodyStream()
}

// retryUnauthorized handles an upstream 401: it forces one refresh of the
// route's credential — shared by every request that saw the same version
// fail — and, when that yields a different value, sends the request once
// more with it. Otherwise the 401 stands and goes to the app.
func (p *Proxy) retryUnauthorized(ctx *fasthttp.RequestCtx, x *exchange, rt *route, rec *record) error {
	rec.retried = true
	old := rec.version
	rctx, cancel := context.WithTimeout(context.Background(), refreshWait)
	defer cancel()
	h := rec.cred.holder
	if err := h.RefreshAfter(rctx, old); err != nil {
		p.opts.Log.WithField("credential", rec.cred.name).WithError(err).Warn("refresh after upstream 401 failed")
		return nil
	}
	v, err := h.Acquire()
	if err != nil {
		return nil
	}
	if v.Fingerprint() == old.Fingerprint() {
		v.Release()
		return nil
	}
	rec.version = v
	old.Release()
	resp := &ctx.Response
	_ = resp.CloseBodyStream()
	resp.Reset()
	x.buf = rt.form.Apply(&x.edit, v.Secret(), x.buf)
	return rt.do(&ctx.Request, resp)
}
