package proxy

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/telemetry"
)

// tunnel serves a CONNECT that allow_tunnel lists: it connects to the
// destination through the egress guard first, so that a forbidden or
// unreachable one is answered with its status, then answers 200 and copies
// bytes both ways untouched until either side ends or the tunnel idles
// out (tunnelIdle). Nothing is injected, nothing inspected.
func (f *Forward) tunnel(ctx *fasthttp.RequestCtx, pol *forwardPolicy, t target, c *caller) {
	up, err := pol.egress.dial(context.Background(), t)
	if err != nil {
		f.refuseTarget(ctx, t, err)
		return
	}
	if c != nil {
		c.stats.requests.Add(1)
	}
	f.decided(ctx, telemetry.ForwardTunnelled, t.String(), "", nil)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(conn net.Conn) {
		// Both sides are closed at shutdown: the app's at the socket,
		// which fasthttp's hijacked connection would not do.
		app := rawConn(conn)
		if !f.tunnels.add(up) {
			return
		}
		defer f.tunnels.remove(up)
		if !f.tunnels.add(app) {
			_ = up.Close()
			return
		}
		defer f.tunnels.remove(app)
		start := time.Now()
		if _, err := io.WriteString(conn, connectEstablished); err != nil {
			_ = up.Close()
			return
		}
		splice(conn, up, tunnelIdle)
		f.p.opts.Log.WithFields(map[string]any{"target": t.String(), "duration_ms": time.Since(start).Milliseconds()}).
			Debug("forward proxy: tunnel closed")
	})
}
