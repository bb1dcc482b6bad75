package proxy

import (
	"bytes"
	"errors"
	"io"

	"github.com/valyala/fasthttp"
)

// requestEditor also implements injector.SignableRequest, for forms that sign
// the request (aws-sigv4). Those methods allocate; they run only on signing
// routes.

func (e *requestEditor) Method() string { return string(e.r.Header.Method()) }

// URL is the absolute upstream URL as it will be sent.
func (e *requestEditor) URL() string {
	return e.scheme + "://" + string(e.r.Header.Host()) + string(e.r.URI().RequestURI())
}

// VisitHeaders visits the headers as they will be sent, Host included.
func (e *requestEditor) VisitHeaders(f func(name, value string)) {
	f("Host", string(e.r.Header.Host()))
	if ct := e.r.Header.ContentType(); len(ct) > 0 {
		f("Content-Type", string(ct))
	}
	e.r.Header.VisitAll(func(k, v []byte) {
		if !bytes.EqualFold(k, []byte("Host")) && !bytes.EqualFold(k, []byte("Content-Type")) {
			f(string(k), string(v))
		}
	})
}

// BufferedBody is the body when it is in memory; false for a stream.
func (e *requestEditor) BufferedBody() ([]byte, bool) {
	if e.r.IsBodyStream() {
		return nil, false
	}
	return e.r.Body(), true
}

// maxSignedBody bounds a streamed body read into memory so that a service
// without UNSIGNED-PAYLOAD can have its hash signed.
const maxSignedBody = 32 << 20

var errBodyTooLarge = errors.New("request body too large to sign")

// bufferBody reads a streamed request body into memory, up to
// maxSignedBody.
func bufferBody(req *fasthttp.Request) error {
	if !req.IsBodyStream() {
		return nil
	}
	var buf bytes.Buffer
	lw := &limitWriter{w: &buf, n: maxSignedBody}
	if err := req.BodyWriteTo(lw); err != nil {
		return err
	}
	if lw.over {
		return errBodyTooLarge
	}
	req.SetBodyRaw(buf.Bytes())
	return nil
}

type limitWriter struct {
	w    io.Writer
	n    int
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		l.over = true
		return 0, errBodyTooLarge
	}
	l.n -= len(p)
	return l.w.Write(p)
}
