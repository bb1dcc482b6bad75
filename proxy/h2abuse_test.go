package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sidekey/sidekey/config"
)

// HTTP/2 abuse on the app listener: a rapid-reset flood (CVE-2023-44487),
// more streams than advertised, a header block over the limit. The client
// is a raw x/net/http2 Framer, which sends whatever frames it is told.

// holdUpstream answers /ok/ at once and holds /hold/ until release is
// closed, counting requests and the most it held at once.
type holdUpstream struct {
	URL     *url.URL
	release chan struct{}
	once    sync.Once
	total   atomic.Int64 // /hold/ requests received
	inside  atomic.Int64 // /hold/ requests being held now
	most    atomic.Int64 // the most held at once
	headers atomic.Pointer[http.Header]
}

func newHoldUpstream(t *testing.T, h2c bool) *holdUpstream {
	t.Helper()
	u := &holdUpstream{release: make(chan struct{})}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		u.headers.Store(&h)
		if !strings.HasPrefix(r.URL.Path, "/hold/") {
			_, _ = io.WriteString(w, "ok")
			return
		}
		u.total.Add(1)
		n := u.inside.Add(1)
		for m := u.most.Load(); n > m && !u.most.CompareAndSwap(m, n); m = u.most.Load() {
		}
		select {
		case <-u.release:
		case <-r.Context().Done():
		}
		u.inside.Add(-1)
		_, _ = io.WriteString(w, "held")
	}))
	if h2c {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(u.free) // before srv.Close: held handlers would block it
	u.URL, _ = url.Parse(srv.URL)
	return u
}

func (u *holdUpstream) free() { u.once.Do(func() { close(u.release) }) }

// h2Conn is a raw HTTP/2 client connection. A goroutine reads every frame
// the server sends into events.
type h2Conn struct {
	c        net.Conn
	fr       *http2.Framer
	wmu      sync.Mutex
	enc      *hpack.Encoder
	hbuf     bytes.Buffer
	settings map[http2.SettingID]uint32
	events   chan h2Event
	goaway   atomic.Pointer[http2.ErrCode]
}

// h2Event is a frame from the server: a response head (status), a
// RST_STREAM (code), or the end of the connection (streamID 0, err).
type h2Event struct {
	streamID uint32
	status   string
	rst      bool
	code     http2.ErrCode
	err      error
}

// dialH2 opens an HTTP/2 connection with prior knowledge: preface,
// SETTINGS both ways, and acknowledges the server's.
func dialH2(t *testing.T, base string) *h2Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2Conn{c: c, fr: http2.NewFramer(c, c), settings: map[http2.SettingID]uint32{}, events: make(chan h2Event, 1<<16)}
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = sf.ForeachSetting(func(s http2.Setting) error { h.settings[s.ID] = s.Val; return nil })
			break
		}
	}
	if err := h.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	go h.read()
	return h
}

func (h *h2Conn) read() {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.events <- h2Event{err: err}
			return
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			h.events <- h2Event{streamID: f.StreamID, status: f.PseudoValue("status")}
		case *http2.RSTStreamFrame:
			h.events <- h2Event{streamID: f.StreamID, rst: true, code: f.ErrCode}
		case *http2.GoAwayFrame:
			code := f.ErrCode
			h.goaway.Store(&code)
		case *http2.PingFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				_ = h.fr.WritePing(true, f.Data)
				h.wmu.Unlock()
			}
		}
	}
}

// request sends a GET for path on stream id, with extra header fields,
// in one HEADERS frame.
func (h *h2Conn) request(id uint32, path string, extra ...hpack.HeaderField) error {
	return h.requestSplit(id, path, 0, extra...)
}

// requestSplit is request with the header block cut into a HEADERS frame
// and CONTINUATION frames of chunk bytes each (0: one frame).
func (h *h2Conn) requestSplit(id uint32, path string, chunk int, extra ...hpack.HeaderField) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.hbuf.Reset()
	for _, f := range append([]hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "127.0.0.1"}, {Name: ":path", Value: path}}, extra...) {
		_ = h.enc.WriteField(f)
	}
	block := h.hbuf.Bytes()
	if chunk <= 0 || chunk >= len(block) {
		chunk = len(block)
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:chunk],
		EndStream: true, EndHeaders: chunk == len(block)}); err != nil {
		return err
	}
	for block = block[chunk:]; len(block) > 0; block = block[min(chunk, len(block)):] {
		if err := h.fr.WriteContinuation(id, len(block) <= chunk, block[:min(chunk, len(block))]); err != nil {
			return err
		}
	}
	return nil
}

func (h *h2Conn) reset(id uint32) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

// next waits up to limit for the server's next event on stream id,
// skipping the others'.
func (h *h2Conn) next(t *testing.T, id uint32, limit time.Duration) h2Event {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case e := <-h.events:
			if e.err != nil {
				t.Fatalf("stream %d: the connection ended: %v", id, e.err)
			}
			if e.streamID == id {
				return e
			}
		case <-timer.C:
			t.Fatalf("stream %d: nothing from the server within %v", id, limit)
		}
	}
}

// h2Get makes one request over a connection of its own with x/net's
// client, and reports its status.
func h2Get(ctx context.Context, base, path string) (int, error) {
	c := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// abuseProxy starts a proxy with routes /ok/ and /hold/ to up (protocol
// http1 or h2c), injecting a token.
func abuseProxy(t *testing.T, up *holdUpstream, protocol string) string {
	t.Helper()
	e := &env{}
	e.set("TOKEN", "tok-abuse")
	rt := testRoute("abuse", "/", up.URL, &config.Inject{Credential: "cred", As: "bearer"})
	rt.StripPrefix, rt.Protocol = false, protocol
	base := startProxy(t, e, rt)
	get(t, mustRequest(t, "GET", base+"/ok/warm", ""), 200).Body.Close()
	return base
}

// A rapid-reset flood: one connection opens streams and resets each at
// once, thousands of times, against a route whose upstream holds every
// request. sidekey keeps at most MaxConcurrentStreams (250) of the reset
// requests' handlers running (x/net/http2 queues the rest, skips those
// reset before they start, and ends the connection with GOAWAY
// ENHANCE_YOUR_CALM once the queue is long), so the upstream never holds
// more than 250: over HTTP/1.1, where the upstream call of a reset request
// runs on, 250 in all; over HTTP/2 (h2c), where it is cancelled with the
// app's stream, a few at a time and never more than the streams opened.
// Requests on other connections are served throughout, and once the
// upstream lets go every handler ends.
func TestH2RapidReset(t *testing.T) {
	for _, protocol := range []string{config.ProtoHTTP1, config.ProtoH2C} {
		t.Run(protocol, func(t *testing.T) {
			up := newHoldUpstream(t, protocol == config.ProtoH2C)
			base := abuseProxy(t, up, protocol)

			// A normal client on its own connections, all along.
			stop := make(chan struct{})
			var served, failed atomic.Int64
			var firstErr atomic.Pointer[string]
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					code, err := h2Get(ctx, base, "/ok/during")
					cancel()
					if err == nil && code == 200 {
						served.Add(1)
						continue
					}
					failed.Add(1)
					msg := fmt.Sprintf("%d %v", code, err)
					firstErr.CompareAndSwap(nil, &msg)
				}
			}()

			const streams = 5000
			h := dialH2(t, base)
			sent := 0
			for i := range streams {
				id := uint32(2*i + 1)
				if h.request(id, "/hold/x") != nil || h.reset(id) != nil {
					break // the server ended the connection
				}
				sent++
			}
			// The flood's handlers reach the upstream (or are dropped): wait
			// until the count holds still, then check the bound.
			var last int64 = -1
			deadline := time.Now().Add(10 * time.Second)
			for n := up.total.Load(); n != last && time.Now().Before(deadline); n = up.total.Load() {
				last = n
				time.Sleep(200 * time.Millisecond) // polling with a deadline: the count settles
			}
			ok := served.Load()
			if g := h.goaway.Load(); g != nil {
				t.Logf("GOAWAY %v after %d of %d streams", *g, sent, streams)
			}
			t.Logf("%d streams opened and reset; the upstream got %d of them, held at most %d at once; %d requests on another connection served meanwhile",
				sent, up.total.Load(), up.most.Load(), ok)
			if m := up.most.Load(); m > h2MaxStreams {
				t.Errorf("the upstream held %d requests at once, more than MaxConcurrentStreams (%d)", m, h2MaxStreams)
			}
			// Over HTTP/1.1 a reset request's upstream call runs to its end,
			// so the held ones are all that get through; over HTTP/2 it is
			// cancelled with the app's stream, and the next one starts.
			if n := up.total.Load(); protocol == config.ProtoHTTP1 && n > h2MaxStreams || n > int64(sent) {
				t.Errorf("the upstream got %d of the %d reset requests", n, sent)
			}
			if ok == 0 {
				t.Errorf("no request on another connection was served during the flood")
			}

			up.free()
			before := served.Load()
			eventually(t, func() bool { return served.Load() > before+3 })
			close(stop)
			wg.Wait()
			if n := failed.Load(); n > 0 {
				t.Errorf("%d requests on another connection failed; first: %s", n, *firstErr.Load())
			}
			eventually(t, func() bool { return up.inside.Load() == 0 })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if code, err := h2Get(ctx, base, "/ok/after"); err != nil || code != 200 {
				t.Errorf("after the flood: %d %v", code, err)
			}
		})
	}
}

// eventually polls cond every 10 ms for up to 10 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}

// sidekey advertises MaxConcurrentStreams 250 and holds a client to it:
// with 250 streams open (the upstream holding them), the 251st is refused
// with RST_STREAM and never reaches the upstream; the 250 complete once
// the upstream answers, and the connection goes on.
func TestH2MaxConcurrentStreams(t *testing.T) {
	up := newHoldUpstream(t, false)
	base := abuseProxy(t, up, config.ProtoHTTP1)
	h := dialH2(t, base)
	if got := h.settings[http2.SettingMaxConcurrentStreams]; got != h2MaxStreams {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want %d", got, h2MaxStreams)
	}
	for i := range h2MaxStreams {
		if err := h.request(uint32(2*i+1), "/hold/x"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, func() bool { return up.inside.Load() == h2MaxStreams })
	over := uint32(2*h2MaxStreams + 1)
	if err := h.request(over, "/hold/x"); err != nil {
		t.Fatal(err)
	}
	e := h.next(t, over, 5*time.Second)
	if !e.rst || (e.code != http2.ErrCodeRefusedStream && e.code != http2.ErrCodeProtocol) {
		t.Fatalf("stream %d, past the limit: %+v, want RST_STREAM REFUSED_STREAM or PROTOCOL_ERROR", over, e)
	}
	if n := up.total.Load(); n != h2MaxStreams {
		t.Errorf("the upstream got %d requests, want %d", n, h2MaxStreams)
	}
	up.free()
	answered := map[uint32]string{}
	for len(answered) < h2MaxStreams {
		select {
		case e := <-h.events:
			if e.err != nil {
				t.Fatalf("the connection ended with %d of %d answered: %v", len(answered), h2MaxStreams, e.err)
			}
			if e.status != "" {
				answered[e.streamID] = e.status
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d streams answered", len(answered), h2MaxStreams)
		}
	}
	for id, st := range answered {
		if st != "200" {
			t.Errorf("stream %d: status %s", id, st)
		}
	}
	next := over + 2
	if err := h.request(next, "/ok/after"); err != nil {
		t.Fatal(err)
	}
	if e := h.next(t, next, 5*time.Second); e.status != "200" {
		t.Errorf("a stream after the others ended: %+v", e)
	}
}

// sidekey advertises a header list limit of 16 KiB (and the per-field
// allowance Go adds to it) and refuses a header block over it without
// calling the upstream: with 431 when its fields are each within the limit
// (the connection serves on), by ending the connection (COMPRESSION_ERROR)
// when one field alone is larger. A block under the limit passes whole.
func TestH2HeaderListSize(t *testing.T) {
	up := newHoldUpstream(t, false)
	base := abuseProxy(t, up, config.ProtoHTTP1)
	h := dialH2(t, base)
	limit := h.settings[http2.SettingMaxHeaderListSize]
	if limit < serverReadBuffer || limit > serverReadBuffer+1024 {
		t.Fatalf("SETTINGS_MAX_HEADER_LIST_SIZE = %d, want 16 KiB and a little", limit)
	}
	fields := func(n, size int) []hpack.HeaderField {
		var out []hpack.HeaderField
		for i := range n {
			out = append(out, hpack.HeaderField{Name: fmt.Sprintf("x-big-%d", i), Value: strings.Repeat("b", size)})
		}
		return out
	}
	for _, tc := range []struct {
		id      uint32
		n, size int
		status  string
	}{
		{1, 1, 8 << 10, "200"},
		{3, 12, 1 << 10, "200"},
		{5, 20, 1 << 10, "431"},
		{7, 1, 100, "200"},
	} {
		up.headers.Store(nil)
		if err := h.request(tc.id, "/ok/headers", fields(tc.n, tc.size)...); err != nil {
			t.Fatal(err)
		}
		e := h.next(t, tc.id, 5*time.Second)
		if e.status != tc.status {
			t.Errorf("%d header fields of %d bytes: %+v, want status %s", tc.n, tc.size, e, tc.status)
		}
		got := up.headers.Load()
		switch {
		case tc.status == "200" && (got == nil || len((*got).Get("X-Big-0")) != tc.size || (*got).Get(fmt.Sprintf("X-Big-%d", tc.n-1)) == ""):
			t.Errorf("%d header fields of %d bytes did not reach the upstream whole", tc.n, tc.size)
		case tc.status != "200" && got != nil:
			t.Errorf("%d refused header fields of %d bytes reached the upstream", tc.n, tc.size)
		}
	}

	// Past what is worth decoding, the connection ends: one field larger
	// than the whole limit, or a block over twice the limit (a
	// CONTINUATION flood, CVE-2023-45288).
	for _, tc := range []struct {
		name   string
		fields []hpack.HeaderField
		chunk  int
		code   http2.ErrCode
	}{
		{"one 17 KiB field", fields(1, 17<<10), 0, http2.ErrCodeCompression},
		{"200 KiB in CONTINUATION frames of 4 KiB", fields(200, 1<<10), 4 << 10, http2.ErrCodeProtocol},
	} {
		up.headers.Store(nil)
		h := dialH2(t, base)
		_ = h.requestSplit(1, "/ok/headers", tc.chunk, tc.fields...) // the server may end the connection while it is written
		select {
		case e := <-h.events:
			if e.err == nil {
				t.Errorf("%s: %+v, want the connection ended", tc.name, e)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the connection stayed open", tc.name)
		}
		if g := h.goaway.Load(); g == nil || *g != tc.code {
			t.Errorf("%s: GOAWAY %v, want %v", tc.name, g, tc.code)
		}
		if up.headers.Load() != nil {
			t.Errorf("%s reached the upstream", tc.name)
		}
	}
}
