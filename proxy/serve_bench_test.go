package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The Serve benchmarks run a whole connection through the server — request
// parsing, the handler, the upstream exchange, the response — over scripted
// connections that answer at once: no socket, no system call, no goroutine
// switch. What is left is the proxy's own CPU per request, the part that
// differs between proxies built on fasthttp, measured without the kernel's
// noise. BenchmarkServeBare is the floor: the bare fasthttp proxy of the
// peer benchmark (set the header, hand the request to a HostClient).

const (
	serveRequest = "POST /api/items?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n" +
		"Authorization: Bearer app-forged\r\nContent-Type: application/octet-stream\r\nContent-Length: 64\r\n\r\n"
	serveResponse = "HTTP/1.1 200 OK\r\nServer: up\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n"
)

var serveBody = strings.Repeat("b", 64)

// appConn is the app's side: it hands the server one request at a time,
// the next only once the answer to the last was written, as a client with
// one request in flight does, and n requests in all.
type appConn struct {
	fakeConn
	req     []byte
	off     int
	n       int
	answers int // responses written that start with a 200 status line
	other   []byte
}

func (c *appConn) Read(p []byte) (int, error) {
	if c.off == len(c.req) {
		if c.n == 0 {
			return 0, io.EOF
		}
		c.n--
		c.off = 0
	}
	k := copy(p, c.req[c.off:])
	c.off += k
	return k, nil
}

func (c *appConn) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("HTTP/1.1 200 ")) {
		c.answers++
	} else if c.other == nil {
		c.other = append([]byte(nil), p...)
	}
	return len(p), nil
}

// upConn is the upstream's side: every write is a whole request, which it
// keeps the last of, and every read after it gets the canned answer.
type upConn struct {
	fakeConn
	last    []byte
	pending []byte
	resp    []byte
}

func (c *upConn) Write(p []byte) (int, error) {
	c.last = append(c.last[:0], p...)
	c.pending = c.resp
	return len(p), nil
}

func (c *upConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return 0, errors.New("upConn: read with no request outstanding")
	}
	k := copy(p, c.pending)
	c.pending = c.pending[k:]
	return k, nil
}

type fakeConn struct{}

// The addresses are made once, as a net.TCPConn's are (it keeps them from
// the accept): a fake that built them per call would charge the request
// path allocations a real connection does not make.
var (
	fakeLocal  net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	fakeRemote net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}
)

func (fakeConn) Close() error                     { return nil }
func (fakeConn) LocalAddr() net.Addr              { return fakeLocal }
func (fakeConn) RemoteAddr() net.Addr             { return fakeRemote }
func (fakeConn) SetDeadline(time.Time) error      { return nil }
func (fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (fakeConn) SetWriteDeadline(time.Time) error { return nil }

// benchServe serves b.N requests on one connection through srv, whose
// upstream connections are up.
func benchServe(b *testing.B, srv *fasthttp.Server, up *upConn) {
	b.Helper()
	req := []byte(serveRequest + serveBody)
	warm := &appConn{req: req, off: len(req), n: 100}
	if err := srv.ServeConn(warm); err != nil || warm.answers != 100 {
		b.Fatalf("warm-up: %d of 100 answered (%v), first other write %q", warm.answers, err, warm.other)
	}
	app := &appConn{req: req, off: len(req)}
	b.ReportAllocs()
	b.ResetTimer()
	app.n = b.N
	err := srv.ServeConn(app)
	b.StopTimer()
	if err != nil || app.answers != b.N {
		b.Fatalf("%d of %d answered (%v), first other write %q", app.answers, b.N, err, app.other)
	}
	if !bytes.Contains(up.last, []byte("\r\nAuthorization: Bearer bench-token\r\n")) || bytes.Contains(up.last, []byte("app-forged")) {
		b.Fatalf("upstream got\n%s", up.last)
	}
}

func newUpConn() *upConn { return &upConn{resp: []byte(serveResponse + serveBody)} }

// BenchmarkServe is sidekey: routing, header hygiene, injection from a
// holder, metrics and the audit line.
func BenchmarkServe(b *testing.B) {
	up := newUpConn()
	px, stop := benchProxy(b, func(string) (net.Conn, error) { return up, nil })
	defer stop()
	benchServe(b, px.srv, up)
}

// BenchmarkServeBare is the floor: the bare fasthttp proxy.
func BenchmarkServeBare(b *testing.B) {
	up := newUpConn()
	hc := &fasthttp.HostClient{Addr: "upstream.local:80", MaxConns: 4096, Dial: func(string) (net.Conn, error) { return up, nil }}
	value := "Bearer bench-token"
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Request.Header.Set(fasthttp.HeaderAuthorization, value)
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	}}
	benchServe(b, srv, up)
}
