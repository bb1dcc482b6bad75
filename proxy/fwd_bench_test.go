package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/certs"
	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// BenchmarkForwardFirstRequest is the latency of a client's first request
// through the forward proxy, over real loopback sockets, serially: a new
// connection, the CONNECT, the TLS handshake (the client verifying the
// leaf) and one request answered by a local upstream.
//
//   - new-host: the leaf is minted for the handshake (a cache of one leaf,
//     hosts taken in turn): mint plus handshake, a client's first
//     request to a host sidekey has not served yet;
//   - cached-host: the leaf is cached: the handshake alone;
//   - app-listener: a new plain connection and one request on the
//     app-facing listener, the same route: the floor without TLS.
func BenchmarkForwardFirstRequest(b *testing.B) {
	for _, tc := range []struct {
		name      string
		cacheSize int
		app       bool
	}{{"new-host", 1, false}, {"cached-host", 0, false}, {"app-listener", 0, true}} {
		b.Run(tc.name, func(b *testing.B) {
			fb := startForwardBench(b, tc.cacheSize)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				host := fb.hosts[i%len(fb.hosts)]
				if tc.app {
					fb.appRequest(b, host)
				} else {
					fb.firstRequest(b, host)
				}
			}
		})
	}
}

// forwardBench is a proxy with a forward listener for eight route hosts.
type forwardBench struct {
	hosts    []string
	fwd, app string
	pool     *x509.CertPool
}

func startForwardBench(b *testing.B, cacheSize int) *forwardBench {
	b.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	b.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	cfg := &config.Config{Credentials: []config.Credential{{Name: "cred", Source: "env", EnvName: "TOKEN"}},
		ForwardProxy: &config.ForwardProxy{Listen: "127.0.0.1:0"}}
	fb := &forwardBench{}
	for i := range 8 {
		h := fmt.Sprintf("h%d.bench.example", i)
		fb.hosts = append(fb.hosts, h)
		cfg.Routes = append(cfg.Routes, config.Route{Name: h, Host: h, PathPrefix: "/", Upstream: u, Timeout: 5 * time.Second,
			Inject: &config.Inject{Credential: "cred", As: "bearer"}})
	}
	set, err := injector.NewSet(cfg.Held(), injector.SetOptions{NewSource: func(config.Credential) (injector.Source, error) {
		return &injector.EnvSource{Name: "TOKEN", Lookup: func(string) (string, bool) { return "bench-token", true }}, nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	_ = set.Holder("cred").Refresh(context.Background())
	log, _ := logtest.NewNullLogger()
	px, err := New(cfg, set, Options{Log: log})
	if err != nil {
		b.Fatal(err)
	}
	ca, err := certs.NewForwardCA(cfg.RouteHosts(), certs.ForwardCAOptions{CacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ca.Close)
	fb.pool = x509.NewCertPool()
	fb.pool.AddCert(ca.Certificate())
	fwd, err := px.NewForward(cfg, ca, ForwardOptions{})
	if err != nil {
		b.Fatal(err)
	}
	aln, fln := benchListen(b), benchListen(b)
	go func() { _ = px.Serve(aln) }()
	go func() { _ = fwd.Serve(fln) }()
	b.Cleanup(func() {
		_ = fwd.Shutdown(context.Background())
		_ = px.Shutdown(context.Background())
	})
	fb.fwd, fb.app = fln.Addr().String(), aln.Addr().String()
	return fb
}

func benchListen(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}

// firstRequest CONNECTs to host, makes the handshake and one request.
func (fb *forwardBench) firstRequest(b *testing.B, host string) {
	c, err := net.Dial("tcp", fb.fwd)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(c, &tls.Config{RootCAs: fb.pool, ServerName: host})
	fb.roundTrip(b, tc, host)
}

// appRequest makes one request on a new connection to the app listener.
func (fb *forwardBench) appRequest(b *testing.B, host string) {
	c, err := net.Dial("tcp", fb.app)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	fb.roundTrip(b, c, host)
}

func (fb *forwardBench) roundTrip(b *testing.B, c net.Conn, host string) {
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}
