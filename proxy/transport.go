package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/valyala/fasthttp"
)

// upstreamTransport is the fasthttp.RoundTripper of every route client. It
// buffers a response body of known length up to bufferMax — the common case,
// which then costs no allocation — and streams every other body (large,
// chunked, or delimited by the connection closing) to the app as it arrives,
// so that downloads run in bounded memory and server-sent events are not
// held back. fasthttp's own streaming allocates several objects per
// response; this one pools them.
//
// The route timeout is not enforced here but per read and write by
// idleConn, so no deadline is set on the connection.
type upstreamTransport struct {
	bufferMax int
	scrub     *bodyScrub // scrub_body routes; nil for the others
}

// maxInterim bounds 1xx responses before the final one.
const maxInterim = 8

// maxStale bounds the closed idle connections one request replaces; past
// it, the request goes on the last one acquired, unchecked.
const maxStale = 8

func (t upstreamTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	skipBody := resp.SkipBody || req.Header.IsHead()
	cc, err := hc.AcquireConn(0, req.ConnectionClose())
	// A pooled connection that the upstream closed while it sat idle is
	// replaced before anything is written to it.
	for tries := 0; err == nil && tries < maxStale; tries++ {
		ic := upstreamConn(cc.Conn())
		if ic == nil || !ic.stale() {
			break
		}
		hc.CloseConn(cc)
		cc, err = hc.AcquireConn(0, req.ConnectionClose())
	}
	if err != nil {
		return false, err
	}
	bw := hc.AcquireWriter(cc.Conn())
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		return true, err
	}
	br := hc.AcquireReader(cc.Conn())
	if err := readHead(resp, br); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return true, err
	}
	if skipBody && resp.Header.ContentLength() == -2 && resp.Header.IsHTTP11() {
		// fasthttp reads a missing length as a body delimited by the
		// connection's close, but an answer to HEAD has no body at all: the
		// upstream's connection, and the app's, stay open.
		resp.Header.ResetConnectionClose()
	}
	keep := !req.ConnectionClose() && !resp.ConnectionClose()
	cl := resp.Header.ContentLength()
	scrub, err := t.scrub.check(&resp.Header)
	if err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return false, err
	}
	// A small body that came with the head is read whole; one that is still
	// on its way streams, so that its bytes reach the app as they arrive
	// (a slow upstream's first byte is not held until its last) — but on a
	// scrub_body route, where a small text body is read whole anyway, so
	// that it keeps its length.
	small := cl >= 0 && cl <= t.bufferMax && (br.Buffered() >= cl || scrub)
	if skipBody || bodyless(resp.StatusCode()) || small {
		if !skipBody && !bodyless(resp.StatusCode()) {
			if err := resp.ReadBody(br, t.bufferMax); err != nil {
				hc.ReleaseReader(br)
				hc.CloseConn(cc)
				return false, err
			}
			if scrub {
				t.scrub.inPlace(resp)
			}
		}
		hc.ReleaseReader(br)
		if keep {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
		return false, nil
	}
	body, size := streamBody(hc, cc, br, resp, keep, (*fasthttp.HostClient).ReleaseConn, (*fasthttp.HostClient).CloseConn)
	if scrub {
		// Masking changes the length: the app gets the body chunked.
		body, size = &scrubReader{src: body, bs: t.scrub}, -1
	}
	resp.SetBodyStream(body, size)
	return false, nil
}

// readHead reads the final response header, skipping interim 1xx answers.
func readHead(resp *fasthttp.Response, br *bufio.Reader) error {
	for n := 0; ; n++ {
		if err := resp.Header.Read(br); err != nil {
			return err
		}
		code := resp.StatusCode()
		if code < 100 || code > 199 || code == fasthttp.StatusSwitchingProtocols {
			return nil
		}
		if n >= maxInterim {
			return errors.New("too many interim responses")
		}
	}
}

// bodyless reports statuses that never carry a body.
func bodyless(code int) bool {
	return code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified || (code >= 100 && code < 200)
}

// upstreamBody streams one upstream response body to the app. The server
// reads it to the end and closes it; Close returns the connection to the
// pool when the body was read whole and the connection may be kept, and
// closes it otherwise. C is fasthttp's connection handle, whose type is
// not exported; release and closeConn are HostClient's methods for it.
type upstreamBody[C any] struct {
	hc        *fasthttp.HostClient
	resp      *fasthttp.Response // the app's, which gets the trailer fields
	direct    net.Conn           // the app's connection, for a body of known length (see WriteTo)
	cc        C
	br        *bufio.Reader
	scratch   *fasthttp.Response // decodes the framing: length, chunks, trailers
	body      io.Reader
	keep      bool
	eof       bool
	release   func(*fasthttp.HostClient, C)
	closeConn func(*fasthttp.HostClient, C)
}

// upstreamBodies pools upstreamBody values; one instantiation is ever used.
var upstreamBodies sync.Pool

// streamBody returns the rest of the response as a body stream for the
// app, and its size (-1: chunked to the app).
func streamBody[C any](hc *fasthttp.HostClient, cc C, br *bufio.Reader, resp *fasthttp.Response, keep bool,
	release, closeConn func(*fasthttp.HostClient, C)) (io.ReadCloser, int) {
	b, _ := upstreamBodies.Get().(*upstreamBody[C])
	if b == nil {
		b = new(upstreamBody[C])
	}
	cl := resp.Header.ContentLength()
	scratch := fasthttp.AcquireResponse()
	scratch.Header.SetContentLength(cl)
	scratch.StreamBody = true
	_ = scratch.ReadBody(br, 0) // with StreamBody it only wraps br
	*b = upstreamBody[C]{hc: hc, resp: resp, cc: cc, br: br, scratch: scratch, body: scratch.BodyStream(),
		keep: keep && cl != -2, release: release, closeConn: closeConn}
	if cl < 0 {
		cl = -1 // re-chunked to the app
	}
	return b, cl
}

func (b *upstreamBody[C]) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF && !b.eof {
		b.eof = true
		copyTrailers(&b.resp.Header, &b.scratch.Header)
	}
	return n, err
}

// copyTrailers gives the app's response the trailer fields read after the
// upstream's last chunk: the server writes them after the body's end.
func copyTrailers(dst, src *fasthttp.ResponseHeader) {
	for k := range src.Trailers() {
		if v := src.PeekBytes(k); len(v) > 0 {
			dst.SetBytesKV(k, v)
		}
	}
}

// writeDirect has a body of known length written straight to the app's
// connection (see WriteTo).
func (b *upstreamBody[C]) writeDirect(c net.Conn) { b.direct = c }

// SupportsBodyWriteTo tells the server to hand the body to WriteTo, which
// it does for a body of known length, once the head is flushed.
func (b *upstreamBody[C]) SupportsBodyWriteTo() bool { return b.direct != nil }

// WriteTo copies a body of known length to the app's connection itself,
// each piece as it arrives. The server's own copy would hold the pieces in
// its write buffer until 4 KiB gathered or the body ended, and a slow
// upstream's first byte would wait for its last. The server flushed the
// head before (ImmediateHeaderFlush), so the buffer is empty, and it checks
// the count returned against the length, as it does for its own copy.
func (b *upstreamBody[C]) WriteTo(io.Writer) (int64, error) {
	buf := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(buf)
	var n int64
	for {
		nr, err := b.Read(buf[:])
		if nr > 0 {
			nw, werr := b.direct.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// directBody is a response body that can be written straight to the app.
type directBody interface{ writeDirect(net.Conn) }

// Close releases the upstream connection; the server calls it once the
// body is written, or when the app went away.
func (b *upstreamBody[C]) Close() error {
	_ = b.scratch.CloseBodyStream()
	fasthttp.ReleaseResponse(b.scratch)
	b.hc.ReleaseReader(b.br)
	if b.eof && b.keep {
		b.release(b.hc, b.cc)
	} else {
		b.closeConn(b.hc, b.cc)
	}
	var zero upstreamBody[C]
	*b = zero
	upstreamBodies.Put(b)
	return nil
}
