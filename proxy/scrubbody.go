package proxy

import (
	"bytes"
	"errors"
	"io"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/telemetry"
)

// Body scrubbing (route scrub_body: true): live secret values in a text
// response body are masked before the app sees them. The upstream is asked
// for an unencoded body; a text body that comes encoded anyway cannot be
// read, so it is refused rather than passed on unscrubbed.

// errEncodedBody is a text response a scrub_body route cannot scrub: the
// upstream compressed it although asked not to.
var errEncodedBody = errors.New("scrub_body: the upstream sent an encoded text body")

// askIdentity asks the upstream for a body sidekey can read.
func askIdentity(req *fasthttp.Request) {
	req.Header.Set(fasthttp.HeaderAcceptEncoding, "identity")
}

// isText reports the content types whose bodies are scrubbed: text/*
// (event streams included), JSON and XML of every kind.
func isText(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	return hasPrefixFold(ct, "text/") || containsFold(ct, "json") || containsFold(ct, "xml")
}

// bodyScrub is a scrub_body route's scrubbing, run by its transport.
type bodyScrub struct {
	sc      Scrubber
	counter *telemetry.Counter // nil without metrics
}

// check refuses a text body it cannot read; it reports whether the body
// is to be scrubbed.
func (bs *bodyScrub) check(h *fasthttp.ResponseHeader) (bool, error) {
	if bs == nil || !isText(h.ContentType()) {
		return false, nil
	}
	if ce := h.ContentEncoding(); len(ce) > 0 && !bytes.EqualFold(ce, []byte("identity")) {
		return false, errEncodedBody
	}
	return true, nil
}

// inPlace masks secrets in a body read whole.
func (bs *bodyScrub) inPlace(resp *fasthttp.Response) {
	b := resp.Body()
	if s := bs.sc.Bytes(b); !sameBytes(s, b) {
		resp.SetBody(s)
		bs.count()
	}
}

func (bs *bodyScrub) count() {
	if bs.counter != nil {
		bs.counter.Inc()
	}
}

// scrubReader masks secrets in a stream read piece by piece. The bytes at
// the end of a piece that could begin a secret are held back until the
// next piece (or the end) shows whether they do; everything else goes on
// at once, so an event stream's events are not delayed.
type scrubReader struct {
	src   io.Reader
	bs    *bodyScrub
	ready []byte // scrubbed, to hand out
	held  []byte // scrubbed, held back
	buf   []byte
	err   error // src's error, handed out after the bytes before it
}

func (r *scrubReader) Read(p []byte) (int, error) {
	for len(r.ready) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.ready)
	r.ready = r.ready[n:]
	return n, nil
}

// fill reads one piece from the source and scrubs it with what was held.
func (r *scrubReader) fill() {
	if r.buf == nil {
		r.buf = make([]byte, 32<<10)
	}
	n, err := r.src.Read(r.buf)
	data := append(r.held, r.buf[:n]...)
	s := r.bs.sc.Bytes(data)
	if !sameBytes(s, data) {
		r.bs.count()
	}
	hold := 0
	if err == nil {
		hold = r.bs.sc.Pending(s)
	}
	r.ready = s[:len(s)-hold]
	r.held = append([]byte(nil), s[len(s)-hold:]...)
	r.err = err
}

// Close closes the upstream body.
func (r *scrubReader) Close() error {
	if c, ok := r.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func hasPrefixFold(s []byte, prefix string) bool {
	return len(s) >= len(prefix) && bytes.EqualFold(s[:len(prefix)], []byte(prefix))
}

func containsFold(s []byte, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if bytes.EqualFold(s[i:i+len(sub)], []byte(sub)) {
			return true
		}
	}
	return false
}
