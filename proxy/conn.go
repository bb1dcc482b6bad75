package proxy

import (
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
	// is renewed only once an eighth of the timeout has passed, so a busy
	// connection does not reset its timer on every small read.
	rd, wd time.Time
}

// Read and Write check the time since the last renewal with time.Since,
// which reads only the monotonic clock; the wall clock a deadline needs is
// read only when it is renewed.
func (c *idleConn) Read(p []byte) (int, error) {
	if time.Since(c.rd) > c.timeout/8 {
		c.rd = time.Now()
		_ = c.Conn.SetReadDeadline(c.rd.Add(c.timeout))
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if time.Since(c.wd) > c.timeout/8 {
		c.wd = time.Now()
		_ = c.Conn.SetWriteDeadline(c.wd.Add(c.timeout))
	}
	return c.Conn.Write(p)
}

func (c *idleConn) SetDeadline(time.Time) error      { return nil }
func (c *idleConn) SetReadDeadline(time.Time) error  { return nil }
func (c *idleConn) SetWriteDeadline(time.Time) error { return nil }
