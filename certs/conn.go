package certs

import (
	"net"
	"sync/atomic"
)

// maxUnwrap bounds the chain of connection wrappers Retired looks through.
const maxUnwrap = 8

// trackingListener hands out trackedConns, so that the GetCertificate
// callback can note on each connection which certificate it served.
type trackingListener struct {
	net.Listener
	in *Inbound
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, acceptGen: l.in.snap.Load().gen}, nil
}

// trackedConn is an accepted TCP connection that remembers the
// certificate its TLS handshake was served. The note lives and dies with
// the connection: nothing to clean up when it closes.
type trackedConn struct {
	net.Conn
	acceptGen uint64 // Generation when accepted
	served    atomic.Pointer[servedCert]
}

// servedCert is the certificate a connection's handshake was served.
type servedCert struct {
	serial string
	gen    atomic.Uint64 // the last Generation at which serial was current
}

// tracked finds the trackedConn under c: c itself, or what c's NetConn
// returns (a *tls.Conn, or a wrapper with the same method), a few levels
// deep.
func tracked(c net.Conn) *trackedConn {
	for range maxUnwrap {
		switch v := c.(type) {
		case *trackedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Retired reports whether c, a connection accepted through Listener (the
// *tls.Conn, or a wrapper of it with a NetConn method), was served a
// certificate that is no longer served to new handshakes: it was renewed or
// replaced since. The proxy closes such a connection after the response to
// the request in hand (Connection: close), so keep-alive clients move to
// the new certificate between requests and no request is cut.
//
// A connection that resumed a TLS session was served no certificate; it
// counts as retired once the certificates changed after it was accepted
// (session tickets issued before a change are refused after it, so a
// resumption after a change is a full handshake or uses a new ticket).
// Retired is false for any other connection and while no certificate is
// held. It is cheap when nothing changed: one atomic load per call, and a
// map lookup the first time after each change. Safe for concurrent use.
func (in *Inbound) Retired(c net.Conn) bool {
	tc := tracked(c)
	if tc == nil {
		return false
	}
	snap := in.snap.Load()
	if len(snap.serials) == 0 {
		return false
	}
	s := tc.served.Load()
	if s == nil {
		return tc.acceptGen != snap.gen
	}
	if s.gen.Load() == snap.gen {
		return false
	}
	if snap.serials[s.serial] {
		s.gen.Store(snap.gen)
		return false
	}
	return true
}

// ServedSerial returns the serial number (as Info.Serial shows it) of the
// certificate c's handshake was served, and whether one is known.
func (in *Inbound) ServedSerial(c net.Conn) (string, bool) {
	tc := tracked(c)
	if tc == nil {
		return "", false
	}
	if s := tc.served.Load(); s != nil {
		return s.serial, true
	}
	return "", false
}
