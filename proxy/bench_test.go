package proxy

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

// benchProxy is a proxy with one bearer route to an in-memory upstream that
// checks the token, with metrics and the audit line on, as in production.
// dial, when not nil, replaces the in-memory upstream.
func benchProxy(b *testing.B, dial func(string) (net.Conn, error)) (*Proxy, func()) {
	return benchProxyWith(b, dial, nil)
}

// benchProxyWith is benchProxy with edit applied to its configuration
// first; every credential and caller token reads "bench-token", but
// CALLER, which reads "caller-token".
func benchProxyWith(b *testing.B, dial func(string) (net.Conn, error), edit func(*config.Config)) (*Proxy, func()) {
	b.Helper()
	upLn := fasthttputil.NewInmemoryListener()
	body := make([]byte, 64)
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Request.Header.Peek("Authorization")) != "Bearer bench-token" {
			ctx.SetStatusCode(401)
			return
		}
		ctx.SetBody(body)
	}}
	go func() { _ = up.Serve(upLn) }()
	u, _ := url.Parse("http://upstream.local")
	cfg := &config.Config{Log: config.Log{Requests: true, Level: "info"},
		Credentials: []config.Credential{{Name: "cred", Source: "env", EnvName: "T"}},
		Routes: []config.Route{{
			Name: "r", PathPrefix: "/api/", Upstream: u, StripPrefix: true, Timeout: 5 * time.Second,
			Inject: &config.Inject{Credential: "cred", As: "bearer"},
		}}}
	if edit != nil {
		edit(cfg)
	}
	red := telemetry.NewRedactor()
	set, err := injector.NewSet(cfg.Held(), injector.SetOptions{Secrets: red, NewSource: func(c config.Credential) (injector.Source, error) {
		return &injector.EnvSource{Name: c.EnvName, Lookup: func(name string) (string, bool) {
			if name == "CALLER" {
				return "caller-token", true
			}
			return "bench-token", true
		}}, nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range set.Names() {
		if err := set.Holder(name).Refresh(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	m, err := telemetry.NewMetrics(telemetry.MetricsOptions{})
	if err != nil {
		b.Fatal(err)
	}
	sink := telemetry.NewLineSink(discard{}, nil, 1<<20, 100*time.Millisecond)
	if dial == nil {
		dial = func(string) (net.Conn, error) { return upLn.Dial() }
	}
	px, err := New(cfg, set, Options{Metrics: m, Audit: sink, Dial: dial, Scrub: red})
	if err != nil {
		b.Fatal(err)
	}
	return px, func() { sink.Close(); _ = up.Shutdown(); _ = m.Shutdown(context.Background()) }
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkHandler runs the whole request path — route, credential
// snapshot, injection, upstream exchange, metrics, audit line — on a reused
// RequestCtx, as the server does for each request on a connection.
func BenchmarkHandler(b *testing.B) {
	px, stop := benchProxy(b, nil)
	defer stop()
	benchHandler(b, px, "Bearer app-forged")
}

// BenchmarkHandlerCaller is BenchmarkHandler with callers configured: the
// app names itself with a caller token in the place the route injects,
// among three token callers, and the route admits only it.
func BenchmarkHandlerCaller(b *testing.B) {
	px, stop := benchProxyWith(b, nil, func(cfg *config.Config) {
		for _, name := range []string{"a", "b", "ci"} {
			env := "OTHER_" + name
			if name == "ci" {
				env = "CALLER"
			}
			cfg.Callers = append(cfg.Callers, config.Caller{Name: name, Token: &config.Ref{Kind: config.RefEnv, Name: env}, UID: -1})
		}
		cfg.Routes[0].Callers = []string{"ci"}
	})
	defer stop()
	benchHandler(b, px, "Bearer caller-token")
}

// benchHandler runs px's handler on a reused RequestCtx with the given
// Authorization.
func benchHandler(b *testing.B, px *Proxy, auth string) {
	var ctx fasthttp.RequestCtx
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}
	bw := bufio.NewWriter(discard{})
	var seed fasthttp.Request
	ctx.Init(&seed, remote, nil)
	run := func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.SetRequestURI("/api/items?x=1")
		ctx.Request.Header.SetHost("127.0.0.1:8080")
		ctx.Request.Header.Set("Authorization", auth)
		px.handle(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d", ctx.Response.StatusCode())
		}
		// As the server does: write the response, streaming the body out,
		// which returns the upstream connection to the pool.
		if err := ctx.Response.Write(bw); err != nil {
			b.Fatal(err)
		}
		bw.Reset(discard{})
	}
	for range 100 { // warm pools and the connection
		run()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		run()
	}
}

func BenchmarkRouteMatch(b *testing.B) {
	r := testRouter()
	host, path := []byte("127.0.0.1:8080"), []byte("/github/api/repos")
	b.ReportAllocs()
	for b.Loop() {
		r.match(host, path)
	}
}

// BenchmarkSnapshotInject is the credential snapshot and bearer injection
// alone.
func BenchmarkSnapshotInject(b *testing.B) {
	h := &injector.Holder{Name: "c", Source: &injector.EnvSource{Name: "T", Lookup: func(string) (string, bool) { return "bench-token", true }}}
	if err := h.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	form, _ := injector.NewForm(config.Inject{As: "bearer"})
	var req fasthttp.Request
	ed := &requestEditor{r: &req}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		v, err := h.Acquire()
		if err != nil {
			b.Fatal(err)
		}
		form.Strip(ed)
		buf = form.Apply(ed, v.Secret(), buf)
		v.Release()
	}
}
