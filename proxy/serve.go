package proxy

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// The app-facing listeners speak HTTP/1.1 and HTTP/2 on one port. Each
// connection is told apart once, before any request, by a goroutine of its
// own (never the accept loop, which a slow client would stall): a TLS one
// by the protocol its handshake negotiated (ALPN h2), a plain one by
// whether it opens with HTTP/2's connection preface (h2c with prior
// knowledge). HTTP/1.1 connections go on to the fasthttp server through a
// listener of their own (sortedListener), which keeps fasthttp's accounting
// of open connections, and so its graceful shutdown; HTTP/2 ones to the
// HTTP/2 server (h2server.go).

// h2Preface opens every HTTP/2 connection (RFC 9113 section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sortedListener hands the fasthttp server the connections found to speak
// HTTP/1.1. Close stops the sorting loop's listener too.
type sortedListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	closer io.Closer
}

func (l *sortedListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sortedListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.closer.Close()
	})
	return err
}

func (l *sortedListener) Addr() net.Addr { return l.addr }

// hand gives c to the fasthttp server, or closes it when the listener has
// been closed meanwhile.
func (l *sortedListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// sortConns accepts from il until it fails, sorting each connection in a
// goroutine of its own.
func (p *Proxy) sortConns(il *inboundListener, sl *sortedListener) error {
	for {
		c, err := il.Accept()
		if err != nil {
			sl.Close()
			return err
		}
		go p.sortConn(c, sl, il.headerTimeout)
	}
}

// sortConn finds out which protocol c speaks, within the header timeout,
// and hands it to the server of that protocol.
func (p *Proxy) sortConn(c net.Conn, sl *sortedListener, headerTimeout time.Duration) {
	if headerTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(headerTimeout))
	}
	h2, err := speaksHTTP2(c)
	if err != nil {
		_ = c.Close() // silent or broken before its first request: nothing to answer
		return
	}
	if h2 {
		p.h2.serve(c)
		return
	}
	sl.hand(c)
}

// speaksHTTP2 reports whether c is an HTTP/2 connection: by ALPN for TLS
// (the handshake runs here), by the preface otherwise. The bytes read to
// tell are kept for whichever server reads c next.
func speaksHTTP2(c net.Conn) (bool, error) {
	if tc, ok := c.(*inboundTLSConn); ok {
		if err := tc.Handshake(); err != nil {
			return false, err
		}
		return tc.ConnectionState().NegotiatedProtocol == "h2", nil
	}
	ic, ok := c.(*inboundConn)
	if !ok {
		return false, nil
	}
	var buf [len(h2Preface)]byte
	n := 0
	for n < len(buf) {
		m, err := ic.Conn.Read(buf[n:])
		n += m
		if !strings.HasPrefix(h2Preface, string(buf[:n])) {
			break // an HTTP/1.1 request line: no method is "PRI"
		}
		if err != nil {
			if n == 0 {
				return false, errBeforeRequest // closed, or silent until the header timeout
			}
			break // part of a preface, then an error: the server that reads on sees both
		}
	}
	ic.unread(buf[:n])
	return n == len(buf) && string(buf[:]) == h2Preface, nil
}

// errBeforeRequest: a connection that ended before sending a request.
var errBeforeRequest = errors.New("connection closed before its first request")
