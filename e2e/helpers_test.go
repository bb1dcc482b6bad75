package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- configuration ----

// configYAML renders a sidekey config: the common header (loopback
// listeners on port 0, debug JSON logs with audit lines), then top (extra
// top-level lines), the credentials (blocks from fileCred, envCred,
// execCred) and the routes.
func configYAML(top []string, creds []string, routes []route) string {
	var b strings.Builder
	has := func(key string) bool {
		for _, l := range top {
			if strings.HasPrefix(l, key+":") {
				return true
			}
		}
		return false
	}
	b.WriteString("listen: 127.0.0.1:0\n")
	if !has("shutdown_timeout") {
		b.WriteString("shutdown_timeout: 10s\n")
	}
	for _, l := range top {
		b.WriteString(l + "\n")
	}
	if !has("admin") {
		b.WriteString("admin:\n  listen: 127.0.0.1:0\n")
	}
	if !has("log") {
		b.WriteString("log:\n  level: debug\n  format: json\n  requests: true\n")
	}
	if len(creds) > 0 {
		b.WriteString("credentials:\n")
		for _, c := range creds {
			b.WriteString(c)
		}
	}
	if len(routes) > 0 {
		b.WriteString("routes:\n")
		for _, r := range routes {
			b.WriteString(r.yaml())
		}
	}
	return b.String()
}

// fileCred is a credential read from a file.
func fileCred(name, path string, extra ...string) string {
	return credBlock(name, append([]string{"source: file", "path: " + quote(path)}, extra...))
}

// envCred is a credential read from an environment variable.
func envCred(name, variable string, extra ...string) string {
	return credBlock(name, append([]string{"source: env", "name: " + variable}, extra...))
}

// execCred is a credential printed by a command.
func execCred(name string, command []string, extra ...string) string {
	q := make([]string, len(command))
	for i, c := range command {
		q[i] = quote(c)
	}
	return credBlock(name, append([]string{"source: exec", "command: [" + strings.Join(q, ", ") + "]"}, extra...))
}

func credBlock(name string, lines []string) string {
	var b strings.Builder
	b.WriteString("  " + name + ":\n")
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// route is one entry of routes:. inject is a YAML flow map such as
// "{credential: tok, as: bearer}"; empty injects nothing.
type route struct {
	name     string
	prefix   string
	host     string
	upstream string
	strip    bool
	inject   string
	timeout  string // default 5s
	extra    []string
}

func (r route) yaml() string {
	var b strings.Builder
	b.WriteString("  - name: " + r.name + "\n")
	var m []string
	if r.host != "" {
		m = append(m, "host: "+r.host)
	}
	if r.prefix != "" {
		m = append(m, "path_prefix: "+r.prefix)
	}
	b.WriteString("    match: {" + strings.Join(m, ", ") + "}\n")
	b.WriteString("    upstream: " + r.upstream + "\n")
	if r.strip {
		b.WriteString("    strip_prefix: true\n")
	}
	if r.inject != "" {
		b.WriteString("    inject: " + r.inject + "\n")
	}
	timeout := r.timeout
	if timeout == "" {
		timeout = "5s"
	}
	b.WriteString("    timeout: " + timeout + "\n")
	for _, l := range r.extra {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ---- upstreams ----

// seenRequest is what an upstream received.
type seenRequest struct {
	Method   string
	Path     string
	RawQuery string
	Host     string
	Header   http.Header
	At       time.Time
}

// upstream is a loopback HTTP server that records every request it gets
// before handing it to its handler.
type upstream struct {
	URL string
	srv *httptest.Server

	mu   sync.Mutex
	reqs []seenRequest
}

// newUpstream starts an upstream on 127.0.0.1; h nil answers 200 "ok".
func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, seenRequest{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Host: r.Host, Header: r.Header.Clone(), At: time.Now(),
		})
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(u.srv.Close)
	u.URL = u.srv.URL
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.reqs...)
}

// byID returns the request that carried X-Test-Id: id.
func (u *upstream) byID(id string) (seenRequest, bool) {
	for _, r := range u.requests() {
		if r.Header.Get("X-Test-Id") == id {
			return r, true
		}
	}
	return seenRequest{}, false
}

// ---- HTTP through sidekey ----

// send makes one request with p's client and reads the whole body. hdr
// holds name/value pairs; the name "Host" sets the request's host. The
// response (status, headers, body) is captured for the secret scan.
func (p *proc) send(t testing.TB, method, url string, body io.Reader, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	captureResponse(t, method+" "+url, resp, b)
	return resp, b, err
}

// get sends GET ProxyURL+path and fails the test on a transport error.
func (p *proc) get(t testing.TB, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := p.send(t, http.MethodGet, p.ProxyURL+path, nil, hdr...)
	if err != nil {
		t.Fatalf("GET %s through sidekey: %v", path, err)
	}
	return resp, body
}

// admin calls the admin API; token, when set, goes in as a bearer token.
func (p *proc) admin(t testing.TB, method, path, token string) (int, []byte) {
	t.Helper()
	var hdr []string
	if token != "" {
		hdr = []string{"Authorization", "Bearer " + token}
	}
	resp, body, err := p.send(t, method, p.AdminURL+path, nil, hdr...)
	if err != nil {
		t.Fatalf("%s %s on the admin API: %v", method, path, err)
	}
	return resp.StatusCode, body
}

func captureResponse(t testing.TB, what string, resp *http.Response, body []byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n", resp.Status)
	_ = resp.Header.Write(&b)
	b.Write(body)
	recordCapture(fmt.Sprintf("response to %s in %s", what, t.Name()), b.Bytes())
}

// jsonError decodes a proxy error body {"error": ..., "credential": ...}.
func jsonError(body []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("body is not JSON (%v): %q", err, maskSecrets(string(body)))
	}
	return m, nil
}

// ---- raw TCP ----

// rawConn is a client connection that writes bytes exactly as given.
type rawConn struct {
	t    testing.TB
	c    net.Conn
	br   *bufio.Reader
	seen bytes.Buffer
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	r := &rawConn{t: t, c: c}
	r.br = bufio.NewReader(io.TeeReader(c, &r.seen))
	name := t.Name()
	t.Cleanup(func() {
		c.Close()
		recordCapture("raw connection in "+name, r.seen.Bytes())
	})
	return r
}

// send writes s; a write error (the server closed early) is returned, not
// fatal, since a server may answer and close before reading everything.
func (r *rawConn) send(s string) error {
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(r.c, s)
	return err
}

// response reads one response (10 s at most) with its body.
func (r *rawConn) response() (*http.Response, []byte, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, err
}

// rawExchange sends s on a new connection and reads the first response.
func rawExchange(t testing.TB, addr, s string) (*http.Response, []byte, error) {
	t.Helper()
	r := dialRaw(t, addr)
	werr := r.send(s)
	resp, body, err := r.response()
	if err != nil && werr != nil {
		err = fmt.Errorf("%v (after write error %v)", err, werr)
	}
	return resp, body, err
}

// ---- waiting ----

// eventually polls cond every 50 ms until it returns nil, failing the test
// with cond's last error once timeout has passed.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// waitOK polls GET path through the proxy until it answers 200 (the
// credential has loaded).
func waitOK(t testing.TB, p *proc, path string) {
	t.Helper()
	eventually(t, 15*time.Second, "GET "+path+" answers 200", func() error {
		resp, body, err := p.send(t, http.MethodGet, p.ProxyURL+path, nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", resp.StatusCode, maskSecrets(string(body)))
		}
		return nil
	})
}
