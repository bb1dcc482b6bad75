package proxy

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"time"
)

// The fasthttp server sets an app connection's read deadline twice per
// keep-alive request: the idle timeout before it waits for the request, its
// read timeout once the first byte is in. Each call re-arms a runtime
// timer, about as costly as the rest of the proxy's own bookkeeping for a
// request. With the two timeouts equal (both the idle timeout), the
// deadline asked for moves on only by the time that passed since the last
// one, so inboundConn re-arms it only when it would move by an eighth of
// the timeout or more. A deadline then fires up to that much early and
// never late. The header timeout, shorter, applies to a connection's first
// request: until it has arrived, every deadline is clamped to it.

// inboundListener hands out inboundConns, within the listener's limits.
// A TLS connection keeps its TLS methods, by which fasthttp tells it is
// one.
type inboundListener struct {
	net.Listener
	lim           *connLimiter
	headerTimeout time.Duration
	slack         time.Duration // see readDeadline
}

func (l *inboundListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := l.lim.admit(c)
		if lc == nil {
			_ = c.Close()
			continue
		}
		var headerBy int64
		if l.headerTimeout > 0 {
			headerBy = time.Now().Add(l.headerTimeout).UnixNano()
		}
		if tc, ok := c.(*tls.Conn); ok {
			return &inboundTLSConn{Conn: tc, rd: readDeadline{slack: l.slack}, guard: guard{lim: lc, headerBy: headerBy}}, nil
		}
		ic := &inboundConn{Conn: c, rd: readDeadline{slack: l.slack}, guard: guard{lim: lc, headerBy: headerBy}}
		if uc, ok := c.(*net.UnixConn); ok {
			ic.uid, ic.hasUID = peerCredUID(uc)
		}
		return ic, nil
	}
}

// guard is a connection's part in its listener's limits: its slot, and
// the deadline of its first request's headers (0: none, or passed it).
type guard struct {
	lim      *limitedConn
	headerBy int64 // Unix nanoseconds
	closed   atomic.Bool
}

// clamp returns t, or the header deadline when that comes first, until the
// connection's first request has arrived.
func (g *guard) clamp(t time.Time) time.Time {
	if g.headerBy == 0 || g.lim == nil || g.lim.active.Load() {
		return t
	}
	if by := time.Unix(0, g.headerBy); t.IsZero() || t.After(by) {
		return by
	}
	return t
}

// release gives up the connection's slot, once.
func (g *guard) release() {
	if g.lim != nil && g.closed.CompareAndSwap(false, true) {
		g.lim.release()
	}
}

// activeConn is a connection that takes part in its listener's limits.
type activeConn interface{ activate() }

func (c *inboundConn) activate()    { c.guard.activate() }
func (c *inboundTLSConn) activate() { c.guard.activate() }

func (g *guard) activate() {
	if g.lim != nil {
		g.lim.activate()
	}
}

// readDeadline is the read deadline in force on a connection, as Unix
// nanoseconds; 0: none. It is atomic because a hijacked connection's two
// copy loops set deadlines concurrently. slack is how much earlier than
// asked it may fire: an eighth of the listener's idle timeout.
type readDeadline struct {
	armed atomic.Int64
	slack time.Duration
}

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
		armed != 0 && want != 0 && want > armed && want-armed < int64(d.slack) {
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

// inboundConn is an app connection in plain HTTP, over TCP or a unix
// socket; on a unix socket it knows the peer's uid (SO_PEERCRED, read at
// accept: the kernel's record of who connected, not a claim of the peer).
type inboundConn struct {
	net.Conn
	rd     readDeadline
	guard  guard
	uid    uint32
	hasUID bool
	nread  atomic.Bool // a byte has arrived
	peeked []byte      // read to tell HTTP/1.1 from HTTP/2, handed out first
}

// unread has b, read from the connection already, read again first.
func (c *inboundConn) unread(b []byte) {
	if len(b) > 0 {
		c.peeked = append(c.peeked[:0], b...)
		c.nread.Store(true)
	}
}

func (c *inboundConn) peerUID() (uint32, bool) { return c.uid, c.hasUID }
func (c *inboundConn) peerCert() *certIdentity { return nil }

func (c *inboundConn) SetReadDeadline(t time.Time) error { return c.rd.set(c.Conn, c.guard.clamp(t)) }
func (c *inboundConn) SetDeadline(t time.Time) error     { return c.rd.setBoth(c.Conn, c.guard.clamp(t)) }

func (c *inboundConn) Read(p []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(p, c.peeked)
		c.peeked = c.peeked[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if n > 0 && !c.nread.Load() {
		c.nread.Store(true)
	}
	return n, err
}

// Write discards what the server would answer on a connection that never
// sent a byte: a connection that timed out before its first request gets
// no 408, it is closed (SPEC limits).
func (c *inboundConn) Write(p []byte) (int, error) {
	if !c.nread.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *inboundConn) Close() error {
	c.guard.release()
	return c.Conn.Close()
}

// NetConn returns the connection underneath, as *tls.Conn's does.
func (c *inboundConn) NetConn() net.Conn { return c.Conn }

// inboundTLSConn is an app connection in TLS; NetConn, Handshake and
// ConnectionState are *tls.Conn's. It reads the names of a verified client
// certificate once, at its first request.
type inboundTLSConn struct {
	*tls.Conn
	rd    readDeadline
	guard guard
	cert  atomic.Pointer[certIdentity]
	read  atomic.Bool // cert has been read (and may be nil)
}

func (c *inboundTLSConn) peerUID() (uint32, bool) { return 0, false }

func (c *inboundTLSConn) peerCert() *certIdentity {
	if c.read.Load() {
		return c.cert.Load()
	}
	id := newCertIdentity(c.Conn.ConnectionState())
	c.cert.Store(id)
	c.read.Store(true)
	return id
}

func (c *inboundTLSConn) SetReadDeadline(t time.Time) error {
	return c.rd.set(c.Conn, c.guard.clamp(t))
}
func (c *inboundTLSConn) SetDeadline(t time.Time) error {
	return c.rd.setBoth(c.Conn, c.guard.clamp(t))
}

func (c *inboundTLSConn) Close() error {
	c.guard.release()
	return c.Conn.Close()
}
