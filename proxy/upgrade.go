package proxy

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// tunnelIdle closes a tunnelled connection that moved no byte for this long.
// Server timeouts do not cover hijacked connections.
const tunnelIdle = 10 * time.Minute

// tunnel forwards a protocol upgrade (websockets): it dials the upstream,
// writes the prepared request head, then hijacks the app's connection and
// copies bytes both ways, the upstream's 101 answer included. The credential
// is injected into the head like any request.
func (p *Proxy) tunnel(ctx *fasthttp.RequestCtx, rt *route) error {
	up, err := rt.dial(rt.dialTimeout())
	if err != nil {
		return err
	}
	req := &ctx.Request
	req.Header.SetRequestURIBytes(req.URI().RequestURI())
	if _, err := up.Write(req.Header.Header()); err != nil {
		up.Close()
		return err
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(app net.Conn) { splice(app, up, tunnelIdle) })
	return nil
}

// dial opens a raw connection to the route's upstream, with TLS when the
// upstream is https (HTTP/1.1 only: an upgrade needs it).
func (rt *route) dial(timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if rt.tls == nil {
		return d.Dial("tcp", rt.addr)
	}
	cfg := rt.tls.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return tls.DialWithDialer(d, "tcp", rt.addr, cfg)
}

// splice copies between a and b until either side ends or idles out, then
// unblocks the other copy and closes b. a belongs to the server, which closes
// it when the hijack handler returns.
func splice(a, b net.Conn, idle time.Duration) {
	done := make(chan struct{}, 1)
	var stop atomic.Bool
	go func() {
		copyIdle(a, b, idle, &stop)
		done <- struct{}{}
	}()
	copyIdle(b, a, idle, &stop)
	now := time.Now()
	_ = a.SetDeadline(now)
	_ = b.SetDeadline(now)
	<-done
	_ = b.Close()
}

// copyIdle copies src to dst until an error, EOF, or idle without a read;
// then it wakes the opposite copy by setting stop and expiring both
// deadlines. stop is checked after each deadline is armed, so a copy that
// re-arms its deadline just after the other expired it still stops.
func copyIdle(dst, src net.Conn, idle time.Duration, stop *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		if stop.Load() {
			break
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	stop.Store(true)
	now := time.Now()
	_ = src.SetDeadline(now)
	_ = dst.SetDeadline(now)
}
