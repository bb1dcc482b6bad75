package proxy

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// seen is what the test upstream saw of the last request.
type seen struct {
	hits   atomic.Int64
	header atomic.Pointer[http.Header]
	uri    atomic.Pointer[string]
}

func newUpstream(t *testing.T) (*seen, *url.URL) {
	t.Helper()
	s := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h := r.Header.Clone()
		s.header.Store(&h)
		uri := r.RequestURI
		s.uri.Store(&uri)
		w.Header().Set("Keep-Alive", "timeout=5")
		_, _ = io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return s, u
}

// env is a map-backed credential store the test changes at will.
type env struct {
	vals atomic.Pointer[map[string]string]
}

func (e *env) set(k, v string) {
	m := map[string]string{k: v}
	e.vals.Store(&m)
}

func (e *env) lookup(k string) (string, bool) {
	m := e.vals.Load()
	if m == nil {
		return "", false
	}
	v, ok := (*m)[k]
	return v, ok
}

// startProxy serves routes on loopback, with one env-backed credential
// "cred" read from e under the variable TOKEN.
func startProxy(t *testing.T, e *env, routes ...config.Route) string {
	t.Helper()
	return startProxyOpts(t, e, Options{}, routes...)
}

// startBearerProxy starts a proxy with one route, /b/, that injects TOKEN
// (token; unset when empty) as a bearer token into an upstream that records
// what it sees.
func startBearerProxy(t *testing.T, token string) (*seen, string) {
	t.Helper()
	up, u := newUpstream(t)
	e := &env{}
	if token != "" {
		e.set("TOKEN", token)
	}
	return up, startProxy(t, e, testRoute("bearer", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"}))
}

func startProxyOpts(t *testing.T, e *env, opts Options, routes ...config.Route) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	set, err := injector.NewSet([]config.Credential{{Name: "cred", Source: "env", EnvName: "TOKEN"}},
		injector.SetOptions{NewSource: func(config.Credential) (injector.Source, error) {
			return &injector.EnvSource{Name: "TOKEN", Lookup: e.lookup}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = set.Run(ctx) }()
	log, _ := logtest.NewNullLogger()
	opts.Log = log
	px, err := New(&config.Config{Routes: routes}, set, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = px.Serve(ln) }()
	t.Cleanup(func() { _ = px.Shutdown(context.Background()) })
	return "http://" + ln.Addr().String()
}

func testRoute(name, prefix string, up *url.URL, in *config.Inject) config.Route {
	return config.Route{Name: name, PathPrefix: prefix, Upstream: up, StripPrefix: true, Inject: in, Timeout: 5 * time.Second}
}

// get retries until the credential has loaded or the deadline passes.
func get(t *testing.T, req *http.Request, want int) *http.Response {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := req.Clone(context.Background())
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && (resp.StatusCode == want || time.Now().After(deadline)) {
			return resp
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline, not a guess
	}
}

func TestInjectionStripsAppCredentialsAndHops(t *testing.T) {
	up, u := newUpstream(t)
	e := &env{}
	e.set("TOKEN", "tok-123")
	base := startProxy(t, e,
		testRoute("bearer", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"}),
		testRoute("query", "/q/", u, &config.Inject{Credential: "cred", As: "query", Param: "api_key"}),
		testRoute("hdr", "/h/", u, &config.Inject{Credential: "cred", As: "header", Header: "X-Api-Key", Format: "token %s"}),
		testRoute("basic", "/basic/", u, &config.Inject{Credential: "cred", As: "basic", Username: "bot"}),
	)
	req, _ := http.NewRequest("GET", base+"/b/items?x=1", nil)
	req.Header.Set("Authorization", "Bearer app-forged")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must-not-pass")
	req.Header.Set("Keep-Alive", "timeout=1")
	resp := get(t, req, 200)
	resp.Body.Close()
	h := *up.header.Load()
	if got := h.Get("Authorization"); got != "Bearer tok-123" {
		t.Errorf("Authorization = %q", got)
	}
	for _, k := range []string{"Proxy-Authorization", "X-Hop", "Keep-Alive"} {
		if h.Get(k) != "" {
			t.Errorf("%s reached the upstream", k)
		}
	}
	if h.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id")
	}
	if got := *up.uri.Load(); got != "/items?x=1" {
		t.Errorf("upstream URI %q", got)
	}
	if resp.Header.Get("Keep-Alive") != "" {
		t.Error("response hop-by-hop header passed")
	}

	req, _ = http.NewRequest("GET", base+"/q/x?api_key=forged&y=2", nil)
	get(t, req, 200).Body.Close()
	if got := *up.uri.Load(); !strings.Contains(got, "api_key=tok-123") || strings.Contains(got, "forged") || !strings.Contains(got, "y=2") {
		t.Errorf("query form: upstream URI %q", got)
	}

	req, _ = http.NewRequest("GET", base+"/h/x", nil)
	req.Header.Set("X-Api-Key", "forged")
	get(t, req, 200).Body.Close()
	if got := up.header.Load().Values("X-Api-Key"); len(got) != 1 || got[0] != "token tok-123" {
		t.Errorf("header form: %q", got)
	}

	req, _ = http.NewRequest("GET", base+"/basic/x", nil)
	req.SetBasicAuth("app", "forged")
	get(t, req, 200).Body.Close()
	r := &http.Request{Header: *up.header.Load()}
	if user, pass, ok := r.BasicAuth(); !ok || user != "bot" || pass != "tok-123" {
		t.Errorf("basic form: %q %q %v", user, pass, ok)
	}
}

func TestFailsClosedWithoutCredential(t *testing.T) {
	up, base := startBearerProxy(t, "") // TOKEN unset
	req, _ := http.NewRequest("GET", base+"/b/x", nil)
	resp := get(t, req, 503)
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 503 || body["error"] != "credential_unavailable" || body["credential"] != "cred" {
		t.Fatalf("got %d %v", resp.StatusCode, body)
	}
	if up.hits.Load() != 0 {
		t.Fatal("request reached the upstream without a credential")
	}
}

func TestRefusals(t *testing.T) {
	up, base := startBearerProxy(t, "tok")
	addr := strings.TrimPrefix(base, "http://")
	tests := []struct {
		name, raw string
		status    int
		code      string
	}{
		{"no route", "GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n", 404, "no_route"},
		{"absolute form", "GET http://evil.example/b/x HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403, "absolute_form_refused"},
		{"connect", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405, "method_not_allowed"},
		{"smuggling", "POST /b/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /b/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "bad_request"},
		{"header too large", "GET /b/x HTTP/1.1\r\nHost: localhost\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", 431, "request_header_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := rawRequest(t, addr, tt.raw)
			if status != tt.status || !strings.Contains(body, `"error":"`+tt.code+`"`) {
				t.Fatalf("got %d %s", status, body)
			}
		})
	}
	if up.hits.Load() != 0 {
		t.Fatalf("upstream saw %d requests", up.hits.Load())
	}
	req, _ := http.NewRequest("GET", base+"/b/ok", nil)
	get(t, req, 200).Body.Close() // still serving
}

// A body that ends before its Content-Length, past what fasthttp reads with
// the headers, is refused with 400 and never reaches the upstream.
func TestTruncatedBodyRefused(t *testing.T) {
	up, base := startBearerProxy(t, "tok")
	req, _ := http.NewRequest("GET", base+"/b/ok", nil)
	get(t, req, 200).Body.Close() // the credential is loaded
	up.hits.Store(0)
	status, b := rawSend(t, strings.TrimPrefix(base, "http://"),
		"POST /b/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20000\r\n\r\n"+strings.Repeat("a", 9000), true)
	if status != 400 || !strings.Contains(b, `"error":"bad_request"`) || up.hits.Load() != 0 {
		t.Fatalf("got %d %s with %d upstream requests; want 400 bad_request and none", status, b, up.hits.Load())
	}
	get(t, req, 200).Body.Close() // still serving
}

func rawRequest(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	return rawSend(t, addr, raw, false)
}

// rawSend writes raw on a new connection, then half-closes it when
// closeWrite, and returns the status and body of the response.
func rawSend(t *testing.T, addr, raw string, closeWrite bool) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = io.WriteString(c, raw)
		if closeWrite {
			_ = c.(*net.TCPConn).CloseWrite()
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// An absolute-form request for a route's own host is served like an
// origin-form one: routed by that host, forwarded in origin form.
func TestAbsoluteFormForRouteHost(t *testing.T) {
	up, u := newUpstream(t)
	e := &env{}
	e.set("TOKEN", "tok")
	rc := testRoute("host", "/", u, &config.Inject{Credential: "cred", As: "bearer"})
	rc.Host, rc.StripPrefix = "api.github.local", false
	base := startProxy(t, e, rc)
	req, _ := http.NewRequest("GET", base+"/warmup", nil)
	req.Host = "api.github.local"
	get(t, req, 200).Body.Close()
	status, _ := rawRequest(t, strings.TrimPrefix(base, "http://"),
		"GET http://api.github.local/repos?x=1 HTTP/1.1\r\nHost: api.github.local\r\nConnection: close\r\n\r\n")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	if got := *up.uri.Load(); got != "/repos?x=1" {
		t.Fatalf("upstream request URI %q, want origin form", got)
	}
	if got := up.header.Load().Get("Authorization"); got != "Bearer tok" {
		t.Fatalf("Authorization %q", got)
	}
}

// An https upstream with a pinned CA, reached from the plain listener: the
// scheme the app used does not leak into the upstream request.
func TestHTTPSUpstreamWithPinnedCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	e := &env{}
	e.set("TOKEN", "tls-tok")
	rc := testRoute("tls", "/t/", u, &config.Inject{Credential: "cred", As: "bearer"})
	rc.UpstreamTLS = &config.UpstreamTLS{CA: &config.Ref{Kind: config.RefFile, Name: "pinned"}, ServerName: "example.com"}
	base := startProxyOpts(t, e, Options{CAPool: func(config.Ref) (*x509.CertPool, error) { return pool, nil }}, rc)
	req, _ := http.NewRequest("GET", base+"/t/x", nil)
	resp := get(t, req, 200)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "Bearer tls-tok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

// Without the pinned CA the upstream's certificate is not trusted: 502.
func TestHTTPSUpstreamVerifiesCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	base := startProxy(t, &env{}, testRoute("tls", "/t/", u, nil))
	resp, err := http.Get(base + "/t/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("unverified upstream answered through the proxy: %d", resp.StatusCode)
	}
}

// The upstream gets exactly one X-Request-Id: the app's own, or one
// generated when the app sent none or an empty one; the app's is kept even
// when its Connection header names it.
func TestRequestIDForwarded(t *testing.T) {
	up, base := startBearerProxy(t, "tok")
	for _, tc := range []struct {
		name   string
		header map[string][]string
		want   string // "": a generated one
	}{
		{"none", nil, ""},
		{"app", map[string][]string{"X-Request-Id": {"app-1"}}, "app-1"},
		{"empty", map[string][]string{"X-Request-Id": {""}}, ""},
		{"listed in Connection", map[string][]string{"X-Request-Id": {"app-2"}, "Connection": {"X-Request-Id"}}, "app-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+"/b/x", nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			get(t, req, 200).Body.Close()
			got := up.header.Load().Values("X-Request-Id")
			if len(got) != 1 || got[0] == "" || tc.want != "" && got[0] != tc.want {
				t.Fatalf("upstream X-Request-Id %q, want one, %q", got, tc.want)
			}
		})
	}
}

// A streamed body that breaks off — a malformed chunk, or fewer bytes than
// its length past what is read whole — is the app's error: 400, not 502.
func TestBrokenStreamedBodyIs400(t *testing.T) {
	_, base := startBearerProxy(t, "tok")
	req, _ := http.NewRequest("GET", base+"/b/ok", nil)
	get(t, req, 200).Body.Close()
	addr := strings.TrimPrefix(base, "http://")
	for name, raw := range map[string]string{
		"bad chunk size": "POST /b/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
		"short body":     "POST /b/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("a", 100000),
	} {
		status, body := rawSend(t, addr, raw, true)
		if status != 400 || !strings.Contains(body, `"error":"bad_request"`) {
			t.Errorf("%s: got %d %s, want 400 bad_request", name, status, body)
		}
	}
	get(t, req, 200).Body.Close() // still serving
}
