package proxy

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"time"
)

// The fasthttp server sets an app connection's read deadline twice per
// keep-alive request: the idle timeout before it waits for the request, the
// header timeout once the first byte is in. Each call re-arms a runtime
// timer, about as costly as the rest of the proxy's own bookkeeping for a
// request. With the two timeouts equal, the deadline asked for moves on
// only by the time that passed since the last one, so inboundConn re-arms
// it only when it would move by deadlineSlack or more. A deadline then
// fires up to deadlineSlack early and never late.

// deadlineSlack is how much earlier than asked a read deadline may fire.
const deadlineSlack = headerTimeout / rearmDivisor

// inboundListener hands out inboundConns. A TLS connection keeps its TLS
// methods, by which fasthttp tells it is one.
type inboundListener struct{ net.Listener }

func (l inboundListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		return &inboundTLSConn{Conn: tc}, nil
	}
	return &inboundConn{Conn: c}, nil
}

// readDeadline is the read deadline in force on a connection, as Unix
// nanoseconds; 0: none. It is atomic because a hijacked connection's two
// copy loops set deadlines concurrently.
type readDeadline struct{ armed atomic.Int64 }

// set sets c's read deadline to t, unless the one in force is at most
// deadlineSlack earlier than t.
func (d *readDeadline) set(c net.Conn, t time.Time) error {
	var want int64
	if !t.IsZero() {
		want = t.UnixNano()
		if want == 0 {
			want = 1
		}
	}
	if armed := d.armed.Load(); armed == want ||
		armed != 0 && want != 0 && want > armed && want-armed < int64(deadlineSlack) {
		return nil
	}
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	d.armed.Store(want)
	return nil
}

func (d *readDeadline) setBoth(c net.Conn, t time.Time) error {
	if err := c.SetWriteDeadline(t); err != nil {
		return err
	}
	return d.set(c, t)
}

// inboundConn is an app connection in plain HTTP.
type inboundConn struct {
	net.Conn
	rd readDeadline
}

func (c *inboundConn) SetReadDeadline(t time.Time) error { return c.rd.set(c.Conn, t) }
func (c *inboundConn) SetDeadline(t time.Time) error     { return c.rd.setBoth(c.Conn, t) }

// NetConn returns the connection underneath, as *tls.Conn's does.
func (c *inboundConn) NetConn() net.Conn { return c.Conn }

// inboundTLSConn is an app connection in TLS; NetConn, Handshake and
// ConnectionState are *tls.Conn's.
type inboundTLSConn struct {
	*tls.Conn
	rd readDeadline
}

func (c *inboundTLSConn) SetReadDeadline(t time.Time) error { return c.rd.set(c.Conn, t) }
func (c *inboundTLSConn) SetDeadline(t time.Time) error     { return c.rd.setBoth(c.Conn, t) }
