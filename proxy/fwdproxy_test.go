package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/certs"
	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

// The forward proxy is tested the way apps use it: Go's own client with a
// proxy URL, and raw CONNECTs where the answer to a malformed or refused
// one matters. The CA is the real one (certs.ForwardCA); its name
// constraints and cache bound are tested in certs (TestForwardCANameConstraints,
// TestForwardCACacheBound).

const (
	apiHost   = "api.test.example"
	otherHost = "other.test.example"
)

// fwdProxy is a proxy with a forward-proxy listener, built as the daemon
// builds it.
type fwdProxy struct {
	px      *Proxy
	fwd     *Forward
	set     *injector.Set
	env     *vars
	metrics *telemetry.Metrics
	ca      *certs.ForwardCA
	pool    *x509.CertPool // trusts ca
	addr    string         // the forward listener
	app     string         // the app-facing listener
}

// tlsUpstream is an HTTPS upstream that records what it saw.
func tlsUpstream(t *testing.T) (*seen, *httptest.Server) {
	t.Helper()
	s := &seen{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h := r.Header.Clone()
		s.header.Store(&h)
		uri := r.RequestURI
		s.uri.Store(&uri)
		_, _ = io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(srv.Close)
	return s, srv
}

// fwdConfig has a route for apiHost and one for otherHost to upstream,
// both injecting "cred", and a forward_proxy section.
func fwdConfig(upstream string, fp config.ForwardProxy) *config.Config {
	u, _ := url.Parse(upstream)
	ca := &config.Ref{Kind: config.RefFile, Name: "upstream-ca"}
	return &config.Config{
		Credentials: []config.Credential{{Name: "cred", Source: "env", EnvName: "TOKEN"}},
		Routes: []config.Route{
			{Name: "api", Host: apiHost, PathPrefix: "/", Upstream: u, Timeout: 5 * time.Second,
				Inject: &config.Inject{Credential: "cred", As: "bearer"}, UpstreamTLS: &config.UpstreamTLS{CA: ca}},
			{Name: "other", Host: otherHost, PathPrefix: "/", Upstream: u, Timeout: 5 * time.Second,
				Inject: &config.Inject{Credential: "cred", As: "bearer"}, UpstreamTLS: &config.UpstreamTLS{CA: ca}},
		},
		ForwardProxy: &fp,
	}
}

// startFwd serves cfg on an app-facing and a forward-proxy listener, with
// credentials and caller tokens read from env and upstream's certificate
// trusted as every route's upstream_tls.ca.
func startFwd(t *testing.T, cfg *config.Config, env map[string]string, upstream *httptest.Server, fopts ForwardOptions) *fwdProxy {
	t.Helper()
	fp := &fwdProxy{env: &vars{m: env}}
	set, err := injector.NewSet(cfg.Held(), injector.SetOptions{NewSource: func(c config.Credential) (injector.Source, error) {
		return &injector.EnvSource{Name: c.EnvName, Lookup: fp.env.lookup}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	fp.set = set
	for _, name := range set.Names() {
		_ = set.Holder(name).Refresh(context.Background())
	}
	if fp.metrics, err = telemetry.NewMetrics(telemetry.MetricsOptions{}); err != nil {
		t.Fatal(err)
	}
	upPool := x509.NewCertPool()
	if upstream != nil {
		upPool.AddCert(upstream.Certificate())
	}
	log, _ := logtest.NewNullLogger()
	opts := Options{Log: log, Metrics: fp.metrics, CAPool: func(config.Ref) (*x509.CertPool, error) { return upPool, nil }}
	if fp.px, err = New(cfg, set, opts); err != nil {
		t.Fatal(err)
	}
	var ca LeafIssuer
	if hosts := cfg.RouteHosts(); len(hosts) > 0 {
		if fp.ca, err = certs.NewForwardCA(hosts, certs.ForwardCAOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fp.ca.Close)
		fp.pool = x509.NewCertPool()
		fp.pool.AddCert(fp.ca.Certificate())
		ca = fp.ca
	}
	if fp.fwd, err = fp.px.NewForward(cfg, ca, fopts); err != nil {
		t.Fatal(err)
	}
	app, fln := listenLoopback(t), listenLoopback(t)
	go func() { _ = fp.px.Serve(app) }()
	go func() { _ = fp.fwd.Serve(fln) }()
	t.Cleanup(func() {
		_ = fp.fwd.Shutdown(context.Background())
		_ = fp.px.Shutdown(context.Background())
	})
	fp.addr, fp.app = fln.Addr().String(), app.Addr().String()
	return fp
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// client is an HTTP client whose proxy is the forward listener (with user
// info, when given) and who trusts the forward-proxy CA.
func (fp *fwdProxy) client(userinfo *url.Userinfo) (*http.Client, *http.Transport) {
	tr := &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: fp.addr, User: userinfo}),
		TLSClientConfig: &tls.Config{RootCAs: fp.pool},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr
}

func (fp *fwdProxy) connects(result string) uint64 { return fp.metrics.ForwardConnects(result).Value() }

// fget sends GET url with c and returns the status, the body and the answer.
func fget(t *testing.T, c *http.Client, rawURL string, hdr ...string) (int, string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func errorCode(body string) string {
	var e struct{ Error string }
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error
}

// fwdRaw sends req on a new connection to addr and reads the answer.
func fwdRaw(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: strings.Fields(req)[0]})
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", strings.SplitN(req, "\r\n", 2)[0], err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func connectReq(dest string, hdr ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", dest, dest)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	return b.String()
}

var defaultFwd = config.ForwardProxy{Listen: "127.0.0.1:0"}

// TestForwardIntercepts: a CONNECT to a route host is intercepted and the
// requests inside go the app-facing request path: the credential injected,
// the hop-by-hop and proxy headers gone, keep-alive kept. A plain http://
// request for the route host is served the same way.
func TestForwardIntercepts(t *testing.T) {
	up, srv := tlsUpstream(t)
	fp := startFwd(t, fwdConfig(srv.URL, defaultFwd), map[string]string{"TOKEN": "upstream-token"}, srv, ForwardOptions{})
	c, tr := fp.client(nil)
	for i := range 3 {
		status, body, resp := fget(t, c, "https://"+apiHost+"/v1/x?q=1", "Authorization", "Bearer app-own", "Proxy-Connection", "keep-alive")
		if status != 200 || body != "upstream ok" {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
		if resp.TLS == nil || resp.TLS.PeerCertificates[0].DNSNames[0] != apiHost {
			t.Fatalf("request %d: not served with a leaf for %s", i, apiHost)
		}
		h := *up.header.Load()
		if got := h.Get("Authorization"); got != "Bearer upstream-token" {
			t.Errorf("upstream Authorization %q", got)
		}
		for _, k := range []string{"Proxy-Connection", "Proxy-Authorization"} {
			if h.Get(k) != "" {
				t.Errorf("%s reached the upstream", k)
			}
		}
		if got := *up.uri.Load(); got != "/v1/x?q=1" {
			t.Errorf("upstream URI %q", got)
		}
	}
	if n := fp.connects(telemetry.ForwardIntercepted); n != 1 {
		t.Errorf("%d intercepted CONNECTs for three requests on one keep-alive connection", n)
	}
	tr.CloseIdleConnections()

	// Plain http:// through the proxy: absolute-form, with the caller's
	// proxy headers.
	status, body, _ := fget(t, c, "http://"+apiHost+"/plain", "Proxy-Authorization", "Basic eDp5")
	if status != 200 || body != "upstream ok" || *up.uri.Load() != "/plain" {
		t.Fatalf("absolute-form: %d %q %q", status, body, *up.uri.Load())
	}
	if h := *up.header.Load(); h.Get("Proxy-Authorization") != "" || h.Get("Authorization") != "Bearer upstream-token" {
		t.Errorf("absolute-form upstream headers %v", h)
	}
	if n := fp.connects(telemetry.ForwardIntercepted); n != 2 {
		t.Errorf("intercepted = %d after one absolute-form request, want 2", n)
	}
	if n := fp.connects(telemetry.ForwardRefused); n != 0 {
		t.Errorf("refused = %d", n)
	}
}

// TestForwardRefusals: every destination that is no route host and not in
// allow_tunnel is refused with 403 destination_not_allowed, and counted;
// malformed requests are 400. The answer never names an address.
func TestForwardRefusals(t *testing.T) {
	_, srv := tlsUpstream(t)
	cfg := fwdConfig(srv.URL, config.ForwardProxy{Listen: "127.0.0.1:0", AllowTunnel: []string{"localhost"}})
	fp := startFwd(t, cfg, map[string]string{"TOKEN": "upstream-token"}, srv, ForwardOptions{})
	for _, tc := range []struct {
		name, req string
		status    int
		code      string
	}{
		{"unrouted host", connectReq("unrouted.test.example:443"), 403, codeDestinationNotAllowed},
		{"IP literal", connectReq("127.0.0.1:443"), 403, codeDestinationNotAllowed},
		{"IPv6 literal", connectReq("[::1]:443"), 403, codeDestinationNotAllowed},
		{"route host, another port", connectReq(apiHost + ":8443"), 403, codeDestinationNotAllowed},
		{"route host, port 22", connectReq(apiHost + ":22"), 403, codeDestinationNotAllowed},
		{"allow_tunnel name resolving to loopback", connectReq("localhost:443"), 403, codeDestinationNotAllowed},
		{"allow_tunnel name, another port", connectReq("localhost:22"), 403, codeDestinationNotAllowed},
		{"no port", connectReq(apiHost), 400, codeBadRequest},
		{"userinfo", connectReq("user:pass@" + apiHost + ":443"), 400, codeBadRequest},
		{"absolute-form, unrouted", "GET http://unrouted.test.example/ HTTP/1.1\r\nHost: unrouted.test.example\r\n\r\n", 403, codeDestinationNotAllowed},
		{"absolute-form, route host on another port", "GET http://" + apiHost + ":8080/ HTTP/1.1\r\nHost: x\r\n\r\n", 403, codeDestinationNotAllowed},
		{"absolute-form https", "GET https://" + apiHost + "/ HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n", 400, codeBadRequest},
		{"origin-form", "GET / HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n", 400, codeProxyRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fp.connects(telemetry.ForwardRefused)
			resp, body := fwdRaw(t, fp.addr, tc.req)
			if resp.StatusCode != tc.status || errorCode(body) != tc.code {
				t.Fatalf("%d %q, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if strings.Contains(body, "127.0.0.1") || strings.Contains(body, "::1") {
				t.Errorf("the answer names an address: %q", body)
			}
			if n := fp.connects(telemetry.ForwardRefused); n != before+1 {
				t.Errorf("refused went from %d to %d", before, n)
			}
		})
	}
	if n := fp.connects(telemetry.ForwardIntercepted) + fp.connects(telemetry.ForwardTunnelled); n != 0 {
		t.Errorf("%d CONNECTs served", n)
	}
}

// TestForwardTunnel: allow_tunnel passes a CONNECT through untouched to a
// loopback destination once allow_addresses lists loopback: the client
// talks TLS to the destination itself, nothing is injected.
func TestForwardTunnel(t *testing.T) {
	dest, destSrv := tlsUpstream(t)
	_, srv := tlsUpstream(t)
	port := destSrv.Listener.Addr().(*net.TCPAddr).Port
	cfg := fwdConfig(srv.URL, config.ForwardProxy{Listen: "127.0.0.1:0",
		AllowTunnel:    []string{fmt.Sprintf("localhost:%d", port)},
		AllowAddresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	fp := startFwd(t, cfg, map[string]string{"TOKEN": "upstream-token"}, srv, ForwardOptions{})
	c, _ := fp.client(nil)
	pool := x509.NewCertPool()
	pool.AddCert(destSrv.Certificate())
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "example.com"}
	status, body, _ := fget(t, c, fmt.Sprintf("https://localhost:%d/through", port), "Authorization", "Bearer app-own")
	if status != 200 || body != "upstream ok" {
		t.Fatalf("%d %q", status, body)
	}
	if got := (*dest.header.Load()).Get("Authorization"); got != "Bearer app-own" {
		t.Errorf("the tunnel changed the request: Authorization %q", got)
	}
	if n := fp.connects(telemetry.ForwardTunnelled); n != 1 {
		t.Errorf("tunnelled = %d", n)
	}
	// Shutdown closes the tunnel the client keeps open.
	if err := fp.fwd.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); fp.fwd.tunnels.open() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels still open 5s after Shutdown", fp.fwd.tunnels.open())
		}
	}
}

// rebindingResolver answers with each of answers in turn, the last one
// from then on, and counts the lookups.
type rebindingResolver struct {
	mu      sync.Mutex
	answers [][]netip.Addr
	lookups int
}

func (r *rebindingResolver) LookupNetIP(_ context.Context, _, _ string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.answers[min(r.lookups, len(r.answers)-1)]
	r.lookups++
	return a, nil
}

// TestForwardRebinding: a tunnel's name is resolved once and the checked
// address is what is dialled, so a name that answers public and then
// private (DNS rebinding) reaches the public address only; once it
// answers private, the CONNECT is refused and nothing is dialled.
func TestForwardRebinding(t *testing.T) {
	_, srv := tlsUpstream(t)
	echo := listenLoopback(t)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { echo.Close() })
	public, private := netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("10.0.0.1")
	res := &rebindingResolver{answers: [][]netip.Addr{{public}, {private}}}
	var mu sync.Mutex
	var dialled []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", echo.Addr().String())
	}
	cfg := fwdConfig(srv.URL, config.ForwardProxy{Listen: "127.0.0.1:0", AllowTunnel: []string{"rebind.test.example"}})
	fp := startFwd(t, cfg, map[string]string{"TOKEN": "t"}, srv, ForwardOptions{Resolver: res, Dial: dial})

	conn, err := net.Dial("tcp", fp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, connectReq("rebind.test.example:443")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first CONNECT: %v %v", resp, err)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("through the tunnel: %q %v", buf, err)
	}
	mu.Lock()
	if len(dialled) != 1 || dialled[0] != "93.184.216.34:443" || res.lookups != 1 {
		t.Errorf("dialled %q after %d lookups, want the checked public address after one", dialled, res.lookups)
	}
	mu.Unlock()

	resp2, body := fwdRaw(t, fp.addr, connectReq("rebind.test.example:443"))
	if resp2.StatusCode != 403 || errorCode(body) != codeDestinationNotAllowed || strings.Contains(body, "10.0.0.1") {
		t.Fatalf("second CONNECT, now private: %d %q", resp2.StatusCode, body)
	}
	mu.Lock()
	if len(dialled) != 1 {
		t.Errorf("a forbidden address was dialled: %q", dialled)
	}
	mu.Unlock()
	if fp.connects(telemetry.ForwardTunnelled) != 1 || fp.connects(telemetry.ForwardRefused) != 1 {
		t.Errorf("tunnelled %d, refused %d", fp.connects(telemetry.ForwardTunnelled), fp.connects(telemetry.ForwardRefused))
	}
}

// TestForwardTunnelHost: every request inside an intercepted tunnel must
// be for the tunnel's host; one for another route host is 421, never sent
// on.
func TestForwardTunnelHost(t *testing.T) {
	up, srv := tlsUpstream(t)
	fp := startFwd(t, fwdConfig(srv.URL, defaultFwd), map[string]string{"TOKEN": "upstream-token"}, srv, ForwardOptions{})
	conn := fp.interceptRaw(t, apiHost+":443")
	for _, req := range []string{
		"GET /x HTTP/1.1\r\nHost: " + otherHost + "\r\n\r\n",
		"GET https://" + otherHost + "/x HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n",
	} {
		resp, body := conn.roundTrip(t, req)
		if resp.StatusCode != http.StatusMisdirectedRequest || errorCode(body) != codeHostNotAllowed {
			t.Errorf("%q: %d %q", strings.SplitN(req, "\r\n", 2)[0], resp.StatusCode, body)
		}
	}
	resp, body := conn.roundTrip(t, "GET /x HTTP/1.1\r\nHost: API.Test.Example:443\r\n\r\n")
	if resp.StatusCode != 200 || body != "upstream ok" {
		t.Fatalf("the tunnel's own host: %d %q", resp.StatusCode, body)
	}
	if up.hits.Load() != 1 {
		t.Errorf("%d requests reached the upstream, want the one for the tunnel's host", up.hits.Load())
	}
}

// tlsClientConn is an intercepted tunnel spoken to by hand.
type tlsClientConn struct {
	c  *tls.Conn
	br *bufio.Reader
}

// interceptRaw CONNECTs to dest (with hdr) and makes the TLS handshake.
func (fp *fwdProxy) interceptRaw(t *testing.T, dest string, hdr ...string) *tlsClientConn {
	t.Helper()
	raw, err := net.Dial("tcp", fp.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(raw, connectReq(dest, hdr...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %v %v", dest, resp, err)
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d bytes after the CONNECT answer", br.Buffered())
	}
	host, _, _ := net.SplitHostPort(dest)
	tc := tls.Client(raw, &tls.Config{RootCAs: fp.pool, ServerName: host})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return &tlsClientConn{c: tc, br: bufio.NewReader(tc)}
}

func (c *tlsClientConn) roundTrip(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c.c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func fwdCallerConfig(upstream string) *config.Config {
	cfg := fwdConfig(upstream, defaultFwd)
	cfg.Callers = []config.Caller{{Name: "ci-runner", Token: &config.Ref{Kind: config.RefEnv, Name: "CI_TOKEN"}, UID: -1}}
	cfg.Credentials = append(cfg.Credentials, config.Credential{Name: "ci-cred", Source: "env", EnvName: "CI_UPSTREAM"})
	cfg.Routes[0].Inject.ByCaller = map[string]string{"ci-runner": "ci-cred"}
	return cfg
}

// TestForwardCallers: with callers set, a CONNECT or an absolute-form
// request without a valid Proxy-Authorization is 407 with a Basic
// challenge; the caller of a proxy URL names the caller of every request
// in its tunnel, which is checked again on each (a rotated token is 407
// inside the tunnel, and the tunnel closed).
func TestForwardCallers(t *testing.T) {
	up, srv := tlsUpstream(t)
	env := map[string]string{"TOKEN": "upstream-token", "CI_TOKEN": "ci-caller-token", "CI_UPSTREAM": "ci-upstream-token"}
	fp := startFwd(t, fwdCallerConfig(srv.URL), env, srv, ForwardOptions{})

	for _, tc := range []struct{ name, req string }{
		{"CONNECT without Proxy-Authorization", connectReq(apiHost + ":443")},
		{"CONNECT with a wrong token", connectReq(apiHost+":443", "Proxy-Authorization", basic("ci-runner", "wrong"))},
		{"CONNECT with a token in the wrong scheme", connectReq(apiHost+":443", "Proxy-Authorization", "Digest x")},
		{"CONNECT to an unrouted host without a token", connectReq("unrouted.test.example:443")},
		{"tunnel destination without a token", connectReq("localhost:443")},
		{"absolute-form without Proxy-Authorization", "GET http://" + apiHost + "/x HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := fwdRaw(t, fp.addr, tc.req)
			if resp.StatusCode != http.StatusProxyAuthRequired || errorCode(body) != codeUnauthn ||
				resp.Header.Get("Proxy-Authenticate") != `Basic realm="sidekey"` || resp.Header.Get("WWW-Authenticate") != "" {
				t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
			}
		})
	}
	if up.hits.Load() != 0 {
		t.Fatal("a request without a caller reached the upstream")
	}

	c, _ := fp.client(url.UserPassword("ci-runner", "ci-caller-token"))
	for _, u := range []string{"https://" + apiHost + "/x", "http://" + apiHost + "/x"} {
		status, body, _ := fget(t, c, u)
		if status != 200 || body != "upstream ok" {
			t.Fatalf("%s with the caller in the proxy URL: %d %q", u, status, body)
		}
		if got := (*up.header.Load()).Get("Authorization"); got != "Bearer ci-upstream-token" {
			t.Errorf("%s: upstream Authorization %q, want the caller's own credential", u, got)
		}
	}
	if st := fp.px.Callers()[0]; st.Name != "ci-runner" || st.Requests != 2 {
		t.Errorf("caller stats %+v, want the two requests attributed", st)
	}

	conn := fp.interceptRaw(t, apiHost+":443", "Proxy-Authorization", basic("ci-runner", "ci-caller-token"))
	if resp, _ := conn.roundTrip(t, "GET /a HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("inside the tunnel: %d", resp.StatusCode)
	}
	fp.env.set("CI_TOKEN", "rotated-caller-token")
	if err := fp.set.Holder(config.CallerCredentialPrefix + "ci-runner").Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, body := conn.roundTrip(t, "GET /b HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n")
	if resp.StatusCode != http.StatusProxyAuthRequired || errorCode(body) != codeUnauthn || !resp.Close {
		t.Errorf("after the caller token rotated: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if n := fp.metrics.CallersRefused(codeUnauthn).Value(); n != 7 {
		t.Errorf("sidekey_callers_refused_total{caller_unauthenticated} = %d, want 7", n)
	}
}

// TestForwardShutdown: the proxy's Shutdown closes an idle intercepted
// connection at once, as it closes its own idle connections.
func TestForwardShutdown(t *testing.T) {
	_, srv := tlsUpstream(t)
	fp := startFwd(t, fwdConfig(srv.URL, defaultFwd), map[string]string{"TOKEN": "upstream-token"}, srv, ForwardOptions{})
	conn := fp.interceptRaw(t, apiHost+":443")
	if resp, _ := conn.roundTrip(t, "GET /a HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("%d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		if err := fp.fwd.Shutdown(ctx); err != nil {
			done <- err
			return
		}
		done <- fp.px.Shutdown(ctx)
	}()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown with an idle intercepted connection: %v", err)
	}
	_ = conn.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the intercepted connection is still open after Shutdown: %v", err)
	}
}

// TestForwardPolicy: which destinations a configuration intercepts.
func TestForwardPolicy(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	cfg := &config.Config{
		Routes: []config.Route{
			{Name: "a", Host: "a.example", Upstream: u("https://a.example:8443")},
			{Name: "a2", Host: "a.example", PathPrefix: "/x/", Upstream: u("https://a.example")},
			{Name: "b", Host: "b.example", Upstream: u("https://10.0.0.1:9443")},
			{Name: "ip", Host: "10.1.2.3", Upstream: u("http://10.1.2.3:8080")},
			{Name: "v6", Host: "[2001:db8::1]", Upstream: u("https://[2001:db8::1]")},
			{Name: "any", PathPrefix: "/any/", Upstream: u("https://c.example:7443")},
		},
		ForwardProxy: &config.ForwardProxy{AllowTunnel: []string{"*.amazonaws.com", "a.example:22"}},
	}
	pol, err := newForwardPolicy(cfg, &certs.ForwardCA{}, ForwardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dest               string
		intercept, tunnels bool
	}{
		{"a.example:443", true, false}, {"a.example:8443", true, false}, {"A.Example.:443", true, false},
		{"a.example:22", false, true}, {"a.example:80", false, false},
		{"b.example:443", true, false}, {"b.example:9443", false, false},
		{"10.1.2.3:443", true, false}, {"10.1.2.3:8080", true, false}, {"10.0.0.1:9443", false, false},
		{"[2001:db8::1]:443", true, false}, {"c.example:7443", false, false}, {"c.example:443", false, false},
		{"s3.amazonaws.com:443", false, true}, {"amazonaws.com:443", false, false},
	} {
		tg, err := parseConnectTarget(tc.dest)
		if err != nil {
			t.Fatal(err)
		}
		if got := pol.intercepts(tg); got != tc.intercept {
			t.Errorf("intercepts(%s) = %v", tc.dest, got)
		}
		if got := pol.tunnel.allows(tg); got != tc.tunnels {
			t.Errorf("tunnels(%s) = %v", tc.dest, got)
		}
	}
	for dest, want := range map[string]bool{
		"http://a.example/": true, "http://a.example:8443/": true, "http://a.example:8080/": false,
		"http://b.example/": true, "http://10.1.2.3:8080/": true, "http://c.example:7443/": false,
	} {
		tg, err := parseAbsoluteTarget(dest)
		if err != nil {
			t.Fatal(err)
		}
		if got := pol.serves(tg); got != want {
			t.Errorf("serves(%s) = %v", dest, got)
		}
	}
	if _, err := newForwardPolicy(cfg, nil, ForwardOptions{}); err == nil {
		t.Error("route hosts without a CA were accepted")
	}
}

// TestForwardUpgrade: a protocol upgrade (websockets) inside an
// intercepted tunnel is tunnelled on to the upstream with the credential,
// and stays open after the proxy's server has let go of the connection.
func TestForwardUpgrade(t *testing.T) {
	var auth atomic.Pointer[string]
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		auth.Store(&a)
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	}))
	t.Cleanup(srv.Close)
	fp := startFwd(t, fwdConfig(srv.URL, defaultFwd), map[string]string{"TOKEN": "upstream-token"}, srv, ForwardOptions{})
	conn := fp.interceptRaw(t, apiHost+":443")
	if _, err := io.WriteString(conn.c, "GET /ws HTTP/1.1\r\nHost: "+apiHost+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(conn.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, msg := range []string{"hello", "again"} {
		if _, err := io.WriteString(conn.c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn.br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo: %q %v", buf, err)
		}
	}
	if a := auth.Load(); a == nil || *a != "Bearer upstream-token" {
		t.Errorf("upstream Authorization %v", a)
	}
}

// An intercepted connection speaks HTTP/2 with a client that offers it,
// through the same request path.
func TestForwardInterceptsHTTP2(t *testing.T) {
	up, srv := tlsUpstream(t)
	fp := startFwd(t, fwdConfig(srv.URL, defaultFwd), map[string]string{"TOKEN": "upstream-token"}, srv, ForwardOptions{})
	c, tr := fp.client(nil)
	tr.ForceAttemptHTTP2 = true
	status, body, resp := fget(t, c, "https://"+apiHost+"/v1/h2")
	if status != 200 || body != "upstream ok" || resp.ProtoMajor != 2 {
		t.Fatalf("%s %d %q", resp.Proto, status, body)
	}
	if got := up.header.Load().Get("Authorization"); got != "Bearer upstream-token" {
		t.Errorf("upstream Authorization %q", got)
	}
	// The tunnel's host only, over HTTP/2 too.
	if status, _, _ := fget(t, c, "https://"+apiHost+"/v1/h2", "Host", "other.test.example"); status != 421 {
		t.Errorf("another host inside the tunnel: %d, want 421", status)
	}
}
