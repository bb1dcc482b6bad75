package proxy

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// deadlineConn records the deadlines that reach the connection.
type deadlineConn struct {
	net.Conn
	read, write []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.read = append(c.read, t)
	return nil
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.write = append(c.write, t)
	return nil
}

// A read deadline is re-armed only when it would move later by the slack
// or more; an earlier one, or none, always reaches the socket.
func TestReadDeadlineCoalesced(t *testing.T) {
	const headerTimeout, deadlineSlack = DefaultIdleTimeout, DefaultIdleTimeout / rearmDivisor
	rec := &deadlineConn{}
	c := &inboundConn{Conn: rec, rd: readDeadline{slack: deadlineSlack}, guard: guard{lim: &limitedConn{}}}
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		t    time.Time
		sent bool
	}{
		{t0.Add(headerTimeout), true},                               // first
		{t0.Add(headerTimeout + time.Second), false},                // 1s later: within the slack
		{t0.Add(headerTimeout + deadlineSlack - 1), false},          // just within
		{t0.Add(headerTimeout + deadlineSlack), true},               // the slack reached
		{t0.Add(headerTimeout + deadlineSlack), false},              // the same again
		{t0.Add(headerTimeout + deadlineSlack - time.Second), true}, // earlier: never late
		{time.Time{}, true},                                         // cleared
		{time.Time{}, false},                                        // still none
		{t0, true},                                                  // none before, so armed now
	}
	want := 0
	for i, s := range steps {
		if err := c.SetReadDeadline(s.t); err != nil {
			t.Fatal(err)
		}
		if s.sent {
			want++
		}
		if len(rec.read) != want {
			t.Fatalf("step %d (%v): %d deadlines reached the socket, want %d", i, s.t, len(rec.read), want)
		}
		if s.sent && !rec.read[want-1].Equal(s.t) {
			t.Fatalf("step %d: socket deadline %v, want %v", i, rec.read[want-1], s.t)
		}
	}
	// SetDeadline sets both; an expired one (a tunnel's wake-up) is earlier
	// than any armed, so it always reaches the socket.
	now := t0.Add(-time.Second)
	if err := c.SetDeadline(now); err != nil {
		t.Fatal(err)
	}
	if len(rec.read) != want+1 || !rec.read[want].Equal(now) || len(rec.write) != 1 || !rec.write[0].Equal(now) {
		t.Fatalf("SetDeadline: read %v, write %v", rec.read, rec.write)
	}
}

// A TLS connection stays one to fasthttp (IsTLS, TLSConnectionState) and
// to Retired, which looks under it through NetConn.
func TestInboundListenerKeepsTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lim := newConnLimiter(Limits{}, nil)
	plain := acceptOne(t, &inboundListener{Listener: ln, lim: lim})
	if _, ok := plain.(interface{ ConnectionState() tls.ConnectionState }); ok {
		t.Error("a plain connection claims TLS")
	}
	if nc, ok := plain.(interface{ NetConn() net.Conn }); !ok || nc.NetConn() == nil {
		t.Error("a plain connection hides the one under it")
	}

	tc := acceptOne(t, &inboundListener{Listener: tls.NewListener(ln, &tls.Config{}), lim: lim})
	if _, ok := tc.(interface {
		Handshake() error
		ConnectionState() tls.ConnectionState
	}); !ok {
		t.Error("a TLS connection lost its TLS methods")
	}
	if nc, ok := tc.(interface{ NetConn() net.Conn }); !ok || nc.NetConn() == nil {
		t.Error("a TLS connection hides the one under it")
	} else if _, isTCP := nc.NetConn().(*net.TCPConn); !isTCP {
		t.Errorf("NetConn of a TLS connection is %T, want the TCP connection", nc.NetConn())
	}
}

// acceptOne dials l and returns the connection it accepts, closed at the
// end of the test.
func acceptOne(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	go func() {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
