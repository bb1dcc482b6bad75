package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/config"
)

const testDomain = "sidekey.test"

// serveProxyLike serves ln the way the proxy does: fasthttp on the
// Inbound's TLS listener, each response saying which certificate its
// connection was served and closing connections whose certificate was
// replaced after the response.
func serveProxyLike(t *testing.T, in *Inbound, ln net.Listener) {
	t.Helper()
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if serial, ok := in.ServedSerial(ctx.Conn()); ok {
				ctx.Response.Header.Set("X-Served-Serial", serial)
			}
			if in.Retired(ctx.Conn()) {
				ctx.SetConnectionClose()
			}
			ctx.SetBodyString("ok")
		},
		Logger: fasthttpLogger{},
	}
	tlsLn := in.Listener(ln)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tlsLn)
	}()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
}

type fasthttpLogger struct{}

func (fasthttpLogger) Printf(string, ...any) {}

// startInbound builds and starts an Inbound for testDomain against p, on
// ln, stopping it when the test ends.
func startInbound(t *testing.T, p *pebble, ln net.Listener, challenge, httpListen string, secrets SecretSet) *Inbound {
	t.Helper()
	t.Setenv("SIDEKEY_TEST_ACME_CA", p.tlsPEM)
	cfg := &config.TLS{Listen: ln.Addr().String(), ACME: &config.ACME{
		Domains:    []string{testDomain},
		Email:      "ops@" + testDomain,
		Directory:  p.directory,
		Challenge:  challenge,
		HTTPListen: httpListen,
		CARoots:    &config.Ref{Kind: config.RefEnv, Name: "SIDEKEY_TEST_ACME_CA"},
		Storage:    "memory",
	}}
	in, err := NewInbound(cfg, InboundOptions{
		Log:                testLogger(t),
		Secrets:            secrets,
		RenewCheckInterval: time.Second,
		RenewalWindowRatio: 0.5,
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func run(t *testing.T, in *Inbound) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// get makes one request and returns the serial of the certificate the
// client saw, whether the server closed the connection after it, and
// whether the connection was a reused one.
func get(t *testing.T, c *http.Client) (serial string, closed bool, resp *http.Response) {
	t.Helper()
	resp, err := c.Get("https://" + testDomain + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		t.Fatal("GET: no TLS peer certificate")
	}
	return formatSerial(resp.TLS.PeerCertificates[0].SerialNumber), resp.Close, resp
}

// TestInboundACME obtains a certificate from a real ACME CA (Pebble,
// in-process), validating tls-alpn-01 for real against the listener the
// certificate is then served on, and watches it renewed several times:
// each renewed certificate is served to new handshakes, and a keep-alive
// connection made with the old one gets its next request answered and
// then closed.
func TestInboundACME(t *testing.T) {
	emptyHome(t)
	ln := listenLoopback(t)
	p := startPebble(t, port(ln), 0, 10)
	secrets := &recordingSecrets{}
	in := startInbound(t, p, ln, ChallengeTLSALPN, "", secrets)

	if in.Ready() {
		t.Fatal("Ready before any certificate was obtained")
	}
	if err := in.Err(); err == nil {
		t.Fatal("Err is nil before any certificate was obtained")
	}
	serveProxyLike(t, in, ln)
	run(t, in)
	waitFor(t, "the first certificate", in.Changed, in.Ready)

	infos := in.Certificates()
	if len(infos) != 1 || infos[0].Name != testDomain || infos[0].Kind != KindInbound ||
		infos[0].Serial == "" || !strings.Contains(infos[0].Issuer, "Pebble") ||
		infos[0].NotAfter.Sub(infos[0].NotBefore) > 11*time.Second {
		t.Fatalf("Certificates() = %+v", infos)
	}
	if len(secrets.live()) == 0 {
		t.Fatal("no private key was registered with the SecretSet")
	}

	keep := tlsClient(p.roots, testDomain, ln.Addr().String())
	serial, closed, resp := get(t, keep)
	if closed || serial != resp.Header.Get("X-Served-Serial") {
		t.Fatalf("first request: serial %s, served %s, closed %v", serial, resp.Header.Get("X-Served-Serial"), closed)
	}
	seen := map[string]bool{serial: true}
	for renewal := 1; renewal <= 3; renewal++ {
		gen := in.Generation()
		waitFor(t, fmt.Sprintf("renewal %d", renewal), in.Changed, func() bool { return in.Generation() != gen })
		cur := in.Certificates()[0].Serial
		if seen[cur] {
			t.Fatalf("renewal %d: serial %s served before", renewal, cur)
		}
		seen[cur] = true

		// The keep-alive connection still has the old certificate: its
		// request is answered, then the connection is closed.
		old, closed, _ := get(t, keep)
		if old == cur || !closed {
			t.Fatalf("renewal %d: old connection got serial %s (current %s), closed %v", renewal, old, cur, closed)
		}
		// The next request makes a new connection with the new certificate
		// (or a newer one, should the CA's renewal info have asked for
		// another renewal in between).
		next, closed, _ := get(t, keep)
		if latest := in.Certificates()[0].Serial; next != cur && next != latest || closed && next == latest {
			t.Fatalf("renewal %d: new connection got serial %s, want %s; closed %v", renewal, next, cur, closed)
		}
		if !in.Ready() || in.Err() != nil {
			t.Fatalf("renewal %d: not ready: %v", renewal, in.Err())
		}
	}
}

// TestInboundResumedSessionRetired: a connection that resumed a TLS
// session was served no certificate; after a renewal it counts as retired,
// and a resumption attempted with a ticket from before the renewal gets a
// full handshake with the new certificate.
func TestInboundResumedSessionRetired(t *testing.T) {
	emptyHome(t)
	ln := listenLoopback(t)
	p := startPebble(t, port(ln), 0, 10)
	in := startInbound(t, p, ln, ChallengeTLSALPN, "", nil)
	serveProxyLike(t, in, ln)
	run(t, in)
	waitFor(t, "the first certificate", in.Changed, in.Ready)

	conf := &tls.Config{RootCAs: p.roots, ServerName: testDomain, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", ln.Addr().String(), conf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := dial()
	roundTrip(t, first) // TLS 1.3 tickets arrive after the handshake
	resumed := dial()
	if !resumed.ConnectionState().DidResume {
		t.Fatal("second connection did not resume")
	}
	if _, closed := roundTrip(t, resumed); closed {
		t.Fatal("resumed connection closed before any renewal")
	}
	gen := in.Generation()
	waitFor(t, "a renewal", in.Changed, func() bool { return in.Generation() != gen })
	if _, closed := roundTrip(t, resumed); !closed {
		t.Fatal("resumed connection from before the renewal was not closed")
	}
	after := dial()
	if after.ConnectionState().DidResume {
		t.Fatal("a ticket from before the renewal was accepted")
	}
	if got, cur := formatSerial(after.ConnectionState().PeerCertificates[0].SerialNumber), in.Certificates()[0].Serial; got != cur {
		t.Fatalf("new connection got serial %s, want %s", got, cur)
	}
}

// roundTrip sends one HTTP/1.1 request on c and reports the response's
// status line and whether the server closes the connection.
func roundTrip(t *testing.T, c *tls.Conn) (string, bool) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+testDomain+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	var resp fasthttp.Response
	if err := resp.Read(bufioReader(c)); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode())
	}
	return string(resp.Body()), resp.ConnectionClose()
}

// TestInboundHTTP01 obtains a certificate with the http-01 challenge,
// answered by HTTPChallengeServer on its own loopback listener, which
// redirects every other request to HTTPS.
func TestInboundHTTP01(t *testing.T) {
	emptyHome(t)
	ln, httpLn := listenLoopback(t), listenLoopback(t)
	p := startPebble(t, port(ln), port(httpLn), 0)
	in := startInbound(t, p, ln, ChallengeHTTP, httpLn.Addr().String(), nil)
	srv := in.HTTPChallengeServer(httpLn)
	go func() { _ = srv.Serve(httpLn) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	serveProxyLike(t, in, ln)
	run(t, in)
	waitFor(t, "the certificate", in.Changed, in.Ready)

	if serial, _, _ := get(t, tlsClient(p.roots, testDomain, ln.Addr().String())); serial != in.Certificates()[0].Serial {
		t.Fatalf("served serial %s, want %s", serial, in.Certificates()[0].Serial)
	}
	plain := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpLn.Addr().String())
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := plain.Get("http://" + testDomain + "/v1/x?y=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := fmt.Sprintf("https://%s:%d/v1/x?y=1", testDomain, port(ln))
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("plain HTTP answered %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

func TestNewInboundChecks(t *testing.T) {
	acme := func(mod func(*config.ACME)) *config.TLS {
		a := &config.ACME{Domains: []string{"a.test"}, Directory: "https://127.0.0.1:1/dir", Challenge: ChallengeTLSALPN, Storage: "memory"}
		mod(a)
		return &config.TLS{Listen: "127.0.0.1:8443", ACME: a}
	}
	for _, tc := range []struct {
		name string
		cfg  *config.TLS
		want error
	}{
		{"no acme", &config.TLS{Listen: ":8443"}, nil},
		{"vault storage without vault", acme(func(a *config.ACME) { a.Storage = "vault:secret/data/acme" }), ErrNoVault},
		{"unknown storage", acme(func(a *config.ACME) { a.Storage = "disk" }), nil},
		{"unknown challenge", acme(func(a *config.ACME) { a.Challenge = "dns-01" }), nil},
		{"http-01 without http_listen", acme(func(a *config.ACME) { a.Challenge = ChallengeHTTP }), nil},
		{"missing ca_roots", acme(func(a *config.ACME) {
			a.CARoots = &config.Ref{Kind: config.RefEnv, Name: "SIDEKEY_TEST_UNSET_VARIABLE"}
		}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewInbound(tc.cfg, InboundOptions{})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestInboundBeforeCertificate: before anything is obtained, handshakes
// fail, nothing is retired, and the admin view names the domain.
func TestInboundBeforeCertificate(t *testing.T) {
	in, err := NewInbound(&config.TLS{Listen: "127.0.0.1:0", ACME: &config.ACME{
		Domains: []string{"A.test."}, Directory: "https://127.0.0.1:1/dir", Challenge: ChallengeTLSALPN, Storage: "memory"}},
		InboundOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	serveProxyLike(t, in, ln)
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "a.test", InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatal("handshake succeeded without a certificate")
	}
	if got := in.Certificates(); len(got) != 1 || got[0].Name != "a.test" || got[0].Serial != "" {
		t.Fatalf("Certificates() = %+v", got)
	}
	if in.Ready() || !errors.Is(in.Err(), ErrNotReady) || in.Generation() != 0 {
		t.Fatalf("Ready %v, Err %v, Generation %d", in.Ready(), in.Err(), in.Generation())
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if in.Retired(a) {
		t.Fatal("an untracked connection is retired")
	}
	if _, ok := in.ServedSerial(a); ok {
		t.Fatal("an untracked connection has a served serial")
	}
	if np := in.TLSConfig().NextProtos; len(np) != 3 || np[0] != "h2" || np[1] != "http/1.1" || np[2] != "acme-tls/1" {
		t.Fatalf("NextProtos = %v", np)
	}
}
