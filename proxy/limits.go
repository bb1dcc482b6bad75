package proxy

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Limits bound what connections to one listener may cost (SPEC limits).
// The zero value limits nothing.
type Limits struct {
	// MaxConnections bounds the listener's open connections. Past it, a new
	// connection displaces the oldest one that has not sent a request yet,
	// or, when every connection is serving, is closed at once.
	MaxConnections int
	// MaxConnectionsPerIP bounds the open connections from one address;
	// past it a new one is closed at once. Unix-socket peers have none.
	// Negative: DefaultPerIP on a listener reachable from the network
	// (not loopback), none on the others.
	MaxConnectionsPerIP int
	// HeaderTimeout bounds the time from accepting a connection (TLS
	// handshake included) to its first request's headers (slow-loris).
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection without a request for
	// this long; it also bounds the headers of the requests after the
	// first.
	IdleTimeout time.Duration
}

// connLimiter enforces a listener's connection limits. Its methods are
// safe for concurrent use; a connection's own bookkeeping is O(1).
type connLimiter struct {
	limits Limits
	log    logrus.FieldLogger

	mu      sync.Mutex
	open    int
	byIP    map[netip.Addr]int
	pending list.List // *limitedConn accepted without a request yet, oldest first

	lastLog atomic.Int64 // Unix seconds of the last refusal logged
}

// DefaultPerIP is MaxConnectionsPerIP's default on a listener reachable
// from the network.
const DefaultPerIP = 256

// forListener resolves the per-address default for the listener at addr.
func (l Limits) forListener(addr net.Addr) Limits {
	if l.MaxConnectionsPerIP >= 0 {
		return l
	}
	l.MaxConnectionsPerIP = 0
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		l.MaxConnectionsPerIP = DefaultPerIP
	}
	return l
}

func newConnLimiter(l Limits, log logrus.FieldLogger) *connLimiter {
	return &connLimiter{limits: l, log: log, byIP: map[netip.Addr]int{}}
}

// limitedConn is one connection's place in its limiter.
type limitedConn struct {
	lim    *connLimiter
	conn   net.Conn
	ip     netip.Addr // zero for a unix-socket peer
	elem   *list.Element
	closed bool // under lim.mu
	active atomic.Bool
}

// admit registers a new connection, or refuses it (nil: close it). It may
// close the oldest connection that has not sent a request to make room.
func (l *connLimiter) admit(c net.Conn) *limitedConn {
	lc := &limitedConn{lim: l, conn: c, ip: remoteIP(c)}
	l.mu.Lock()
	if max := l.limits.MaxConnectionsPerIP; max > 0 && lc.ip.IsValid() && l.byIP[lc.ip] >= max {
		l.mu.Unlock()
		l.refused("max_connections_per_ip", lc.ip)
		return nil
	}
	var evict *limitedConn
	if max := l.limits.MaxConnections; max > 0 && l.open >= max {
		front := l.pending.Front()
		if front == nil {
			l.mu.Unlock()
			l.refused("max_connections", lc.ip)
			return nil
		}
		evict = front.Value.(*limitedConn)
		l.forget(evict)
	}
	l.open++
	if lc.ip.IsValid() {
		l.byIP[lc.ip]++
	}
	lc.elem = l.pending.PushBack(lc)
	l.mu.Unlock()
	if evict != nil {
		closeRaw(evict.conn) // its own release finds it forgotten already
	}
	return lc
}

// forget removes lc from the counts, once. Called with l.mu held.
func (l *connLimiter) forget(lc *limitedConn) {
	if lc.closed {
		return
	}
	lc.closed = true
	l.open--
	if lc.ip.IsValid() {
		if l.byIP[lc.ip]--; l.byIP[lc.ip] <= 0 {
			delete(l.byIP, lc.ip)
		}
	}
	if lc.elem != nil {
		l.pending.Remove(lc.elem)
		lc.elem = nil
	}
}

// release is the connection's Close.
func (lc *limitedConn) release() {
	lc.lim.mu.Lock()
	lc.lim.forget(lc)
	lc.lim.mu.Unlock()
}

// activate marks the connection as serving a request: it no longer counts
// as waiting, and cannot be displaced. Cheap after the first call.
func (lc *limitedConn) activate() {
	if lc.active.Load() {
		return
	}
	lc.active.Store(true)
	lc.lim.mu.Lock()
	if lc.elem != nil {
		lc.lim.pending.Remove(lc.elem)
		lc.elem = nil
	}
	lc.lim.mu.Unlock()
}

// refused logs a refused connection, at most once a second.
func (l *connLimiter) refused(limit string, ip netip.Addr) {
	now := time.Now().Unix()
	if last := l.lastLog.Load(); now-last < 1 || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	f := logrus.Fields{"limit": limit}
	if ip.IsValid() {
		f["remote"] = ip.String()
	}
	l.log.WithFields(f).Warn("connection refused: limit reached")
}

// closeRaw closes a connection from outside the goroutine serving it; a TLS
// one at the socket, whatever its handshake is doing.
func closeRaw(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	_ = c.Close()
}

// remoteIP is a TCP peer's address; zero for anything else.
func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}
