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
	ic := &inboundConn{Conn: c}
	if uc, ok := c.(*net.UnixConn); ok {
		ic.uid, ic.hasUID = peerCredUID(uc)
	}
	return ic, nil
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

// inboundConn is an app connection in plain HTTP, over TCP or a unix
// socket; on a unix socket it knows the peer's uid (SO_PEERCRED, read at
// accept: the kernel's record of who connected, not a claim of the peer).
type inboundConn struct {
	net.Conn
	rd     readDeadline
	uid    uint32
	hasUID bool
}

func (c *inboundConn) peerUID() (uint32, bool) { return c.uid, c.hasUID }
func (c *inboundConn) peerCert() *certIdentity { return nil }

func (c *inboundConn) SetReadDeadline(t time.Time) error { return c.rd.set(c.Conn, t) }
func (c *inboundConn) SetDeadline(t time.Time) error     { return c.rd.setBoth(c.Conn, t) }

// NetConn returns the connection underneath, as *tls.Conn's does.
func (c *inboundConn) NetConn() net.Conn { return c.Conn }

// inboundTLSConn is an app connection in TLS; NetConn, Handshake and
// ConnectionState are *tls.Conn's. It reads the names of a verified client
// certificate once, at its first request.
type inboundTLSConn struct {
	*tls.Conn
	rd   readDeadline
	cert atomic.Pointer[certIdentity]
	read atomic.Bool // cert has been read (and may be nil)
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

func (c *inboundTLSConn) SetReadDeadline(t time.Time) error { return c.rd.set(c.Conn, t) }
func (c *inboundTLSConn) SetDeadline(t time.Time) error     { return c.rd.setBoth(c.Conn, t) }
