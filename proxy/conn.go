package proxy

import (
	"crypto/tls"
	"net"
	"time"
)

// idleConn bounds each read and write on an upstream connection by the
// route timeout, like nginx's proxy_read_timeout: the upstream may take
// `timeout` to start answering and may then be silent for at most `timeout`
// between chunks. A whole-exchange deadline would cut server-sent events and
// long downloads; this never cuts a stream that keeps moving.
//
// fasthttp's own deadline calls are ignored: the proxy never asks the
// client for a request deadline, so they only ever clear one.
type idleConn struct {
	net.Conn
	timeout time.Duration
	// rd and wd are when the current read/write deadline was set; a deadline
	// is renewed only once 1/rearmDivisor of the timeout has passed, so a
	// busy connection does not reset its timer on every small read. used is
	// when the connection last read or wrote. All three are monoNow readings.
	rd, wd, used time.Duration
}

// rearmDivisor sets how far a connection's deadline may lag behind the one
// it would have if re-armed at every read: 1/rearmDivisor of its timeout.
// Re-arming updates a runtime timer; this keeps it off most requests of a
// busy connection, upstream (idleConn) and app side (inboundConn) alike.
const rearmDivisor = 8

func newIdleConn(c net.Conn, timeout time.Duration) *idleConn {
	now := monoNow()
	// The first read and write set their deadlines.
	return &idleConn{Conn: c, timeout: timeout, rd: now - timeout, wd: now - timeout, used: now}
}

// procStart is the origin of monoNow.
var procStart = time.Now()

// monoNow reads the monotonic clock alone, as the time since procStart: one
// clock reading, where time.Now takes two.
func monoNow() time.Duration { return time.Since(procStart) }

// Read and Write read the clock once; the wall clock a deadline needs is
// read only when it is renewed.
func (c *idleConn) Read(p []byte) (int, error) {
	now := monoNow()
	c.used = now
	if now-c.rd > c.timeout/rearmDivisor {
		c.rd = now
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	now := monoNow()
	c.used = now
	if now-c.wd > c.timeout/rearmDivisor {
		c.wd = now
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	return c.Conn.Write(p)
}

func (c *idleConn) SetDeadline(time.Time) error      { return nil }
func (c *idleConn) SetReadDeadline(time.Time) error  { return nil }
func (c *idleConn) SetWriteDeadline(time.Time) error { return nil }

// staleAfter is how long a pooled connection sits unused before it is
// checked for a close by the upstream ahead of its next request.
const staleAfter = 100 * time.Millisecond

// stale reports a connection that has been unused for staleAfter or more
// and that the upstream has closed meanwhile, or has written to: an idle
// HTTP/1.1 upstream never sends, and a TLS record waiting there (an alert,
// a late session ticket) costs at most a new connection. Upstreams close idle
// connections on their own keep-alive timeout, often shorter than the
// pool's (Node.js's is 5s): a request written to such a connection fails
// after the write, and one that is not idempotent cannot be sent again.
// nginx and Go's transport watch their idle connections for the same
// reason. A connection used within staleAfter is not checked, which keeps
// the system call off the path of a busy connection.
func (c *idleConn) stale() bool {
	return monoNow()-c.used >= staleAfter && peerClosed(c.Conn)
}

// upstreamConn is the idleConn under an upstream connection, plain or TLS;
// nil for a connection dialled without one.
func upstreamConn(c net.Conn) *idleConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	ic, _ := c.(*idleConn)
	return ic
}
