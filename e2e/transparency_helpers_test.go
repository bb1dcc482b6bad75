package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"
)

// hbMaxBody is go-httpbin's request and response size limit here, above
// the largest body the transparency suite sends (its default is 1 MiB).
const hbMaxBody = 8 << 20

// hbIDHeader carries the id that ties what go-httpbin received to the call
// that sent it. The recorder removes it before go-httpbin sees the
// request, so that go-httpbin's echoes are the same for both calls of a
// pair.
const hbIDHeader = "X-Transparency-Id"

// hbSeen is what go-httpbin received for one request.
type hbSeen struct {
	ID               string
	Method           string
	RequestURI       string // the request target exactly as it arrived
	Proto            string
	Host             string
	Header           http.Header
	ContentLength    int64
	TransferEncoding []string
	BodyLen          int
	BodySHA          string
	BodyErr          string // reading the body failed (a malformed chunk)
	Trailer          http.Header
}

// framing describes how the request body was delimited.
func (s hbSeen) framing() string {
	if slices.Contains(s.TransferEncoding, "chunked") {
		return "chunked"
	}
	return fmt.Sprintf("Content-Length %d", s.ContentLength)
}

// hbUpstream is go-httpbin served in-process on 127.0.0.1 behind a
// recorder. The recorder reads each request body whole (bodies here are at
// most a few MB), keeps its length and hash, and hands go-httpbin the same
// bytes followed by the read error, if any, so go-httpbin answers a
// malformed body as it would have. It removes hbIDHeader and X-Request-Id
// before go-httpbin sees the request: sidekey adds the one, the test the
// other, and neither may change go-httpbin's echo.
type hbUpstream struct {
	URL  string // http://127.0.0.1:port
	Addr string // 127.0.0.1:port

	mu   sync.Mutex
	seen []hbSeen
}

func newHTTPBin(t testing.TB) *hbUpstream {
	t.Helper()
	hb := &hbUpstream{}
	bin := httpbin.New(httpbin.WithMaxBodySize(hbMaxBody), httpbin.WithMaxDuration(10*time.Second))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hbSeen{
			ID: r.Header.Get(hbIDHeader), Method: r.Method, RequestURI: r.RequestURI, Proto: r.Proto,
			Host: r.Host, Header: r.Header.Clone(), ContentLength: r.ContentLength,
			TransferEncoding: slices.Clone(r.TransferEncoding),
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, hbMaxBody+1))
		sum := sha256.Sum256(body)
		s.BodyLen, s.BodySHA = len(body), hex.EncodeToString(sum[:])
		if err != nil {
			s.BodyErr = err.Error()
		}
		s.Trailer = r.Trailer.Clone()
		hb.mu.Lock()
		hb.seen = append(hb.seen, s)
		hb.mu.Unlock()
		r.Header.Del(hbIDHeader)
		r.Header.Del("X-Request-Id")
		var rest io.Reader = bytes.NewReader(body)
		if err != nil {
			rest = io.MultiReader(rest, errReader{err})
		}
		r.Body = io.NopCloser(rest)
		bin.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	hb.URL = srv.URL
	hb.Addr = srv.Listener.Addr().String()
	return hb
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// byID returns the requests that carried id, in arrival order.
func (hb *hbUpstream) byID(id string) []hbSeen {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	var out []hbSeen
	for _, s := range hb.seen {
		if s.ID == id {
			out = append(out, s)
		}
	}
	return out
}

func (hb *hbUpstream) count() int {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return len(hb.seen)
}

// since returns the requests received after the first n.
func (hb *hbUpstream) since(n int) []hbSeen {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return slices.Clone(hb.seen[n:])
}

// ---- one call, sent directly and through sidekey ----

// hbCall is one request of a transparency case. target is the request
// target below the route: sent as it is to go-httpbin, and after the route
// prefix to sidekey.
type hbCall struct {
	method  string
	target  string
	header  []string // name/value pairs, repeated names sent as repeated lines
	body    []byte
	chunked bool // send the body without a length (Transfer-Encoding: chunked)
}

// hbResult is what one call produced.
type hbResult struct {
	url     string // the URL the client called
	status  int
	proto   string
	header  http.Header
	trailer http.Header
	body    []byte
	te      []string      // the response's Transfer-Encoding
	cl      int64         // the response's ContentLength (-1 unknown)
	close   bool          // the response closed the connection
	seen    []hbSeen      // what go-httpbin received for the call
	elapsed time.Duration // until the whole body was read
}

// lastSeen is the request go-httpbin received for the call (the last one,
// when sidekey sent it more than once).
func (r hbResult) lastSeen() (hbSeen, bool) {
	if len(r.seen) == 0 {
		return hbSeen{}, false
	}
	return r.seen[len(r.seen)-1], true
}

// transp is the transparency suite's fixture: go-httpbin, the sidekey in
// front of it (route prefix "/hb") and the credential that route injects.
type transp struct {
	hb        *hbUpstream
	p         *proc
	prefix    string // "/hb"
	scrubBody bool   // the route sets scrub_body
	tok       string // the injected credential's value
	direct    *http.Client
}

func newDirectClient() *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// viaSidekey rebinds the fixture to another sidekey process (its route
// prefix, whether that route scrubs bodies) in front of the same go-httpbin.
func (s *transp) viaSidekey(p *proc, prefix string, scrubBody bool) *transp {
	c := *s
	c.p, c.prefix, c.scrubBody = p, prefix, scrubBody
	return &c
}

// both sends c directly to go-httpbin, with the Authorization sidekey would
// inject, and then through sidekey without it.
func (s *transp) both(t *testing.T, c hbCall) (direct, proxied hbResult) {
	t.Helper()
	return s.directCall(t, c), s.proxiedCall(t, c)
}

func (s *transp) directCall(t *testing.T, c hbCall) hbResult {
	t.Helper()
	c.header = append(withoutHeader(c.header, "Authorization"), "Authorization", "Bearer "+s.tok)
	return s.call(t, s.direct, s.hb.URL, c, false)
}

func (s *transp) proxiedCall(t *testing.T, c hbCall) hbResult {
	t.Helper()
	return s.call(t, s.p.Client, s.p.ProxyURL+s.prefix, c, true)
}

func withoutHeader(hdr []string, name string) []string {
	var out []string
	for i := 0; i+1 < len(hdr); i += 2 {
		if !strings.EqualFold(hdr[i], name) {
			out = append(out, hdr[i], hdr[i+1])
		}
	}
	return out
}

func (s *transp) call(t *testing.T, client *http.Client, base string, c hbCall, proxied bool) hbResult {
	t.Helper()
	id := nextID()
	res := hbResult{url: base + c.target}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
		if c.chunked {
			body = io.MultiReader(body) // a reader of unknown length: sent chunked
		}
	}
	method := c.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, res.url, body)
	if err != nil {
		t.Fatalf("building %s %s: %v", method, maskSecrets(res.url), err)
	}
	// Guard against the client rewriting the target: the case is about
	// what the server does with exactly this request target.
	if want := requestTarget(res.url); req.URL.RequestURI() != want {
		t.Fatalf("the Go client would send %q for %q, not %q", maskSecrets(req.URL.RequestURI()), maskSecrets(res.url), maskSecrets(want))
	}
	req.Header.Set(hbIDHeader, id)
	for i := 0; i+1 < len(c.header); i += 2 {
		if c.header[i] == "Host" {
			req.Host = c.header[i+1]
			continue
		}
		req.Header.Add(c.header[i], c.header[i+1])
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s (%s): %v", method, maskSecrets(res.url), side(proxied), maskSecrets(err.Error()))
	}
	defer resp.Body.Close()
	res.body, err = io.ReadAll(resp.Body)
	res.elapsed = time.Since(start)
	res.status, res.proto, res.header, res.trailer = resp.StatusCode, resp.Proto, resp.Header, resp.Trailer
	res.te, res.cl, res.close = resp.TransferEncoding, resp.ContentLength, resp.Close
	if proxied {
		s.capture(t, method+" "+res.url, resp.Status, resp.Header, res.body)
	}
	if err != nil {
		t.Fatalf("%s %s (%s): reading the body: %v", method, maskSecrets(res.url), side(proxied), err)
	}
	res.seen = s.hb.byID(id)
	return res
}

// requestTarget is the part of an http:// URL after its authority.
func requestTarget(u string) string {
	rest := strings.TrimPrefix(u, "http://")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i:]
	}
	return "/"
}

func side(proxied bool) string {
	if proxied {
		return "through sidekey"
	}
	return "direct"
}

// capture records a response from sidekey for the suite's secret scan.
// Status and headers are kept as they are: sidekey scrubs live secrets from
// every response header. In the body, an echo of the route's own injected
// credential is masked unless the route scrubs bodies: go-httpbin echoes
// the request, and SPEC lets an unscrubbed route pass that echo on. Every
// other secret is still scanned for.
func (s *transp) capture(t testing.TB, what, status string, h http.Header, body []byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n", status)
	_ = h.Write(&b)
	b.Write(s.maskEcho(body))
	recordCapture(maskSecrets(fmt.Sprintf("response to %s in %s", what, t.Name())), b.Bytes())
}

func (s *transp) maskEcho(body []byte) []byte {
	if s.scrubBody {
		return body
	}
	return bytes.ReplaceAll(body, []byte(s.tok), []byte("[echo of the route's credential]"))
}

// ---- comparing ----

// respIgnored are the response headers sidekey is documented to change:
// Date, hop-by-hop headers, X-Request-Id. Framing (Content-Length) and the
// redirect targets (Location, Content-Location) are compared apart.
var respIgnored = []string{
	"Date", "X-Request-Id", "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Transfer-Encoding", "Trailer", "Upgrade", "Te", "Content-Length", "Location", "Content-Location",
}

// seenIgnored are the request headers that may differ upstream: the
// recorder's id, sidekey's X-Request-Id, hop-by-hop headers, and the framing
// headers (compared apart, as framing).
var seenIgnored = []string{
	hbIDHeader, "X-Request-Id", "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization",
	"Te", "Trailer", "Upgrade", "Transfer-Encoding", "Content-Length",
}

// cmp says how a pair of results is compared beyond the defaults.
type cmp struct {
	ignoreResp []string // more response headers to ignore
	ignoreSeen []string // more request headers to ignore upstream
	anyFraming bool     // the request framing upstream may differ (an app's chunked body)
	noBody     bool     // do not compare response bodies
	noRedirect bool     // do not compare Location and Content-Location
}

// same reports every difference between the direct and the proxied result
// of one call: status, response headers, framing length, body, trailers,
// and what go-httpbin received.
func (s *transp) same(t *testing.T, d, p hbResult, o cmp) {
	t.Helper()
	if d.status != p.status {
		t.Errorf("status: direct %d, through sidekey %d (body %q)", d.status, p.status, clip(s.maskEcho(p.body)))
	}
	for _, line := range headerDiff(d.header, p.header, append(slices.Clone(respIgnored), o.ignoreResp...)) {
		t.Errorf("response header %s", line)
	}
	if dl, pl := d.header.Get("Content-Length"), p.header.Get("Content-Length"); dl != "" && pl != "" && dl != pl {
		t.Errorf("response Content-Length: direct %s, through sidekey %s", dl, pl)
	} else if dl != pl {
		t.Logf("response framing: direct Content-Length %q %v, through sidekey Content-Length %q %v", dl, d.te, pl, p.te)
	}
	if !o.noRedirect {
		s.sameRedirect(t, "Location", d, p)
		s.sameRedirect(t, "Content-Location", d, p)
	}
	if !o.noBody && !bytes.Equal(d.body, p.body) {
		t.Errorf("response body differs: %s", s.bodyDiff(d.body, p.body))
	}
	for _, line := range headerDiff(d.trailer, p.trailer, o.ignoreResp) {
		t.Errorf("response trailer %s", line)
	}
	s.sameSeen(t, d, p, o)
}

// sameRedirect checks that a Location-like header through sidekey is the
// direct one mapped onto sidekey's URL when it pointed at go-httpbin, and
// unchanged otherwise. Both are resolved against the URL each client
// called, so a relative and an absolute spelling of one target agree.
func (s *transp) sameRedirect(t *testing.T, name string, d, p hbResult) {
	t.Helper()
	dv, pv := d.header.Get(name), p.header.Get(name)
	if dv == "" && pv == "" {
		return
	}
	want := s.mapToSidekey(resolve(d.url, dv))
	got := resolve(p.url, pv)
	if dv == "" || pv == "" || want != got {
		t.Errorf("%s: direct %q, through sidekey %q (resolves to %q, want %q)", name, dv, pv, got, want)
	}
}

// mapToSidekey maps a URL on go-httpbin onto the URL an app calls through
// sidekey: what nginx's proxy_redirect default does.
func (s *transp) mapToSidekey(u string) string {
	if rest, ok := strings.CutPrefix(u, s.hb.URL); ok && (rest == "" || strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, "?")) {
		if rest == "" || rest[0] == '?' {
			rest = "/" + rest
		}
		return s.p.ProxyURL + s.prefix + rest
	}
	return u
}

func resolve(base, ref string) string {
	b, err := url.Parse(base)
	if err != nil {
		return "unparsable base " + base
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "unparsable " + ref
	}
	return b.ResolveReference(r).String()
}

// sameSeen compares what go-httpbin received for the two calls.
func (s *transp) sameSeen(t *testing.T, d, p hbResult, o cmp) {
	t.Helper()
	ds, ok := d.lastSeen()
	if !ok {
		t.Errorf("go-httpbin did not receive the direct request")
		return
	}
	ps, ok := p.lastSeen()
	if !ok {
		t.Errorf("go-httpbin did not receive the request through sidekey")
		return
	}
	if len(p.seen) > 1 {
		t.Errorf("go-httpbin received the request through sidekey %d times", len(p.seen))
	}
	if ds.Method != ps.Method {
		t.Errorf("upstream method: direct %s, through sidekey %s", ds.Method, ps.Method)
	}
	if ds.RequestURI != ps.RequestURI {
		t.Errorf("upstream request target: direct %q, through sidekey %q", ds.RequestURI, ps.RequestURI)
	}
	if ds.Host != ps.Host {
		t.Errorf("upstream Host: direct %q, through sidekey %q", ds.Host, ps.Host)
	}
	if ds.BodyLen != ps.BodyLen || ds.BodySHA != ps.BodySHA {
		t.Errorf("upstream body: direct %d bytes (sha256 %.12s), through sidekey %d bytes (sha256 %.12s)",
			ds.BodyLen, ds.BodySHA, ps.BodyLen, ps.BodySHA)
	}
	if ds.BodyErr != ps.BodyErr {
		t.Errorf("upstream body read error: direct %q, through sidekey %q", ds.BodyErr, ps.BodyErr)
	}
	if df, pf := ds.framing(), ps.framing(); df != pf {
		if o.anyFraming {
			t.Logf("upstream framing: direct %s, through sidekey %s", df, pf)
		} else {
			t.Errorf("upstream framing: direct %s, through sidekey %s", df, pf)
		}
	}
	for _, line := range headerDiff(ds.Header, ps.Header, append(slices.Clone(seenIgnored), o.ignoreSeen...)) {
		t.Errorf("upstream request header %s", maskSecrets(line))
	}
	for _, line := range headerDiff(ds.Trailer, ps.Trailer, nil) {
		t.Errorf("upstream request trailer %s", line)
	}
	s.injected(t, ps)
	if rid := ps.Header.Values("X-Request-Id"); len(rid) != 1 || rid[0] == "" {
		t.Errorf("upstream X-Request-Id through sidekey = %q, want one", rid)
	}
}

// injected checks that the request through sidekey carried exactly the
// route's credential.
func (s *transp) injected(t *testing.T, ps hbSeen) {
	t.Helper()
	if got := ps.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+s.tok {
		t.Errorf("upstream Authorization through sidekey = %q, want exactly the injected credential", maskSecrets(fmt.Sprint(got)))
	}
}

// headerDiff lists the headers that differ between a and b, ignoring the
// names in ignore, as "Name: direct [...], through sidekey [...]".
func headerDiff(a, b http.Header, ignore []string) []string {
	skip := map[string]bool{}
	for _, n := range ignore {
		skip[http.CanonicalHeaderKey(n)] = true
	}
	names := map[string]bool{}
	for k := range a {
		names[http.CanonicalHeaderKey(k)] = true
	}
	for k := range b {
		names[http.CanonicalHeaderKey(k)] = true
	}
	var out []string
	for k := range names {
		if skip[k] {
			continue
		}
		av, bv := a.Values(k), b.Values(k)
		if !slices.Equal(av, bv) {
			out = append(out, fmt.Sprintf("%s: direct %q, through sidekey %q", k, av, bv))
		}
	}
	sort.Strings(out)
	return out
}

// bodyDiff describes how two bodies differ: for JSON objects the keys (and
// the echoed request headers) whose values differ, otherwise the lengths,
// hashes and the first differing offset.
func (s *transp) bodyDiff(d, p []byte) string {
	var dm, pm map[string]any
	if json.Unmarshal(d, &dm) == nil && json.Unmarshal(p, &pm) == nil {
		var diffs []string
		for _, k := range unionKeys(dm, pm) {
			dv, pv := dm[k], pm[k]
			if k == "headers" {
				dh, _ := dv.(map[string]any)
				ph, _ := pv.(map[string]any)
				for _, h := range unionKeys(dh, ph) {
					if a, b := jsonText(dh[h]), jsonText(ph[h]); a != b {
						diffs = append(diffs, fmt.Sprintf("echoed request header %s: direct %s, through sidekey %s", h, a, b))
					}
				}
				continue
			}
			if a, b := jsonText(dv), jsonText(pv); a != b {
				diffs = append(diffs, fmt.Sprintf("%q: direct %s, through sidekey %s", k, clip([]byte(a)), clip([]byte(b))))
			}
		}
		if len(diffs) > 0 {
			return maskSecrets(strings.Join(diffs, "; "))
		}
	}
	i := 0
	for i < len(d) && i < len(p) && d[i] == p[i] {
		i++
	}
	ds, ps := sha256.Sum256(d), sha256.Sum256(p)
	return fmt.Sprintf("direct %d bytes (sha256 %.12x), through sidekey %d bytes (sha256 %.12x), first difference at byte %d: direct %q, through sidekey %q",
		len(d), ds, len(p), ps, i, clip(d[i:]), clip(s.maskEcho(p[i:])))
}

func unionKeys(a, b map[string]any) []string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func jsonText(v any) string {
	if v == nil {
		return "absent"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// clip shortens b for a message, masking known secrets.
func clip(b []byte) string {
	const n = 160
	s := string(b)
	if len(s) > n {
		s = s[:n] + "..."
	}
	return maskSecrets(s)
}

// ---- raw connections ----

// hbRaw is a raw client connection for requests the Go client cannot send
// (pipelining, HTTP/1.0, Expect handshakes, malformed bodies). Unlike
// rawConn it records the responses it parses, with the echo of the route's
// credential masked as capture does, rather than every byte.
type hbRaw struct {
	s       *transp
	t       testing.TB
	c       net.Conn
	br      *bufio.Reader
	proxied bool
}

func (s *transp) dial(t testing.TB, proxied bool) *hbRaw {
	t.Helper()
	addr := s.hb.Addr
	if proxied {
		addr = s.p.ProxyAddr
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &hbRaw{s: s, t: t, c: c, br: bufio.NewReader(c), proxied: proxied}
}

// send writes s; a write error (the server closed early) is returned.
func (r *hbRaw) send(s string) error {
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(r.c, s)
	return err
}

// interim reads the status line and headers of a 1xx response, waiting at
// most wait. It returns the status line, or an error.
func (r *hbRaw) interim(wait time.Duration) (string, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(wait))
	defer r.c.SetReadDeadline(time.Time{})
	status, err := r.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == "\r\n" || line == "\n" {
			break
		}
	}
	return strings.TrimSpace(status), nil
}

// response reads one response (10 s at most) with its whole body; req is
// the request it answers (nil: GET), for a HEAD's empty body.
func (r *hbRaw) response(req *http.Request) (*http.Response, []byte, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r.br, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, hbMaxBody))
	if r.proxied {
		r.s.capture(r.t, "a raw request", resp.Status, resp.Header, body)
	}
	return resp, body, err
}

// closed reports whether the server closes the connection (within wait)
// once the responses read so far are done: EOF with nothing more sent.
func (r *hbRaw) closed(wait time.Duration) error {
	_ = r.c.SetReadDeadline(time.Now().Add(wait))
	b, err := r.br.ReadByte()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("connection still open after %v: %v", wait, err)
	}
	return fmt.Errorf("unexpected byte %q after the response", b)
}

// dropEchoHeaders re-renders a go-httpbin JSON echo without the named
// request headers in its "headers" object.
func dropEchoHeaders(b []byte, names []string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if h, ok := m["headers"].(map[string]any); ok {
		for _, n := range names {
			delete(h, http.CanonicalHeaderKey(n))
		}
	}
	return json.Marshal(m)
}
