package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/telemetry"
)

// Proxy is the app-facing server. Its routing table is swapped atomically,
// so a request uses one consistent table from start to end.
type Proxy struct {
	opts     Options
	auditOn  atomic.Bool
	table    atomic.Pointer[table]
	srv      *fasthttp.Server
	inflight atomic.Int64
	rids     *requestIDs
	stopOnce sync.Once
	// callerStats keep each caller's counts across reloads; refused
	// counts sidekey_callers_refused_total by reason (nil without metrics).
	callerStats callerRegistry
	refused     map[string]*telemetry.Counter
	h2          *h2Server
}

// Options are what the proxy reports to; each may be nil.
type Options struct {
	Log logrus.FieldLogger
	// Audit receives one line per request when the config asks for it.
	Audit *telemetry.LineSink
	// AuditText writes audit lines as logfmt text instead of JSON.
	AuditText bool
	Metrics   *telemetry.Metrics
	Tracing   *telemetry.Tracing
	// Dial, when set, opens upstream connections instead of TCP (tests and
	// benchmarks use in-memory listeners).
	Dial func(addr string) (net.Conn, error)
	// ClientCert finds an outbound client certificate by name.
	ClientCert func(name string) ClientCertificate
	// CAPool loads a pinned upstream CA bundle (upstream_tls.ca).
	CAPool func(config.Ref) (*x509.CertPool, error)
	// Scrub masks the live secret values that an upstream echoes in its
	// response headers (always) and text bodies (routes with scrub_body),
	// so that the app never sees a credential; *telemetry.Redactor
	// implements it. nil: no masking.
	Scrub Scrubber
	// Limits bound each listener's connections; zero timeouts take the
	// defaults. They are fixed for the process: a reload cannot change them.
	Limits Limits
	// Retired reports an inbound TLS connection made with a certificate that
	// has since been renewed: its response then carries Connection: close,
	// so the client reconnects between requests and gets the new one.
	Retired func(net.Conn) bool
}

// Scrubber masks live secret values.
type Scrubber interface {
	// Contains reports whether b holds a live secret, without allocating.
	Contains(b []byte) bool
	// Bytes returns b with every live secret masked, or b itself, without
	// allocating, when it holds none.
	Bytes(b []byte) []byte
	// Pending is how many bytes at the end of b could begin a live secret
	// that continues past it.
	Pending(b []byte) int
}

// table is one routing configuration, immutable once built.
type table struct {
	admit   *admission
	callers *callerTable
	router  *router
	routes  []*route
	none    *telemetry.RouteMetrics // requests that match no route
	stop    chan struct{}           // closed when the table is replaced
}

// Server limits shared by the app-facing listener.
const (
	serverReadBuffer = 16 << 10 // request line and headers; larger gets 431
	bufferedBodyMax  = 64 << 10 // bodies up to this are buffered (replayable), larger ones stream
)

// Defaults of Limits' timeouts (SPEC limits).
const (
	DefaultHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout   = 60 * time.Second
)

// New builds the proxy for cfg's routes, taking credentials from holders.
func New(cfg *config.Config, holders Holders, opts Options) (*Proxy, error) {
	if opts.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		opts.Log = l
	}
	if opts.Limits.HeaderTimeout <= 0 {
		opts.Limits.HeaderTimeout = DefaultHeaderTimeout
	}
	if opts.Limits.IdleTimeout <= 0 {
		opts.Limits.IdleTimeout = DefaultIdleTimeout
	}
	p := &Proxy{opts: opts, rids: newRequestIDs(), refused: map[string]*telemetry.Counter{}}
	if opts.Metrics != nil {
		for _, reason := range refusalReasons {
			p.refused[reason] = opts.Metrics.CallersRefused(reason)
		}
	}
	if err := p.Reload(cfg, holders); err != nil {
		return nil, err
	}
	if opts.Metrics != nil {
		opts.Metrics.ObserveInflight(p.InFlight)
	}
	p.h2 = newH2Server(p)
	p.srv = p.newServer(p.handle)
	return p, nil
}

// newServer builds a server for one of the proxy's listeners, with handler
// h: the app-facing listener's (p.handle, which also serves the
// connections the forward proxy intercepts) or the forward-proxy
// listener's own.
func (p *Proxy) newServer(h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:        h,
		ErrorHandler:   p.requestError,
		Logger:         telemetry.Printf{Log: p.opts.Log},
		ReadBufferSize: serverReadBuffer,
		// Both the idle timeout, so that inboundConn can coalesce the two
		// deadlines fasthttp sets per request; the header timeout applies
		// to each connection's first request (inboundListener).
		ReadTimeout:                  p.opts.Limits.IdleTimeout,
		IdleTimeout:                  p.opts.Limits.IdleTimeout,
		MaxRequestBodySize:           bufferedBodyMax,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
	}
}

// Reload swaps in cfg's routes, with credentials from holders, atomically:
// a request in flight finishes on the table it started with. On error the
// current table keeps serving.
func (p *Proxy) Reload(cfg *config.Config, holders Holders) error {
	t := &table{stop: make(chan struct{}), admit: newAdmission(cfg)}
	var err error
	if t.callers, err = newCallerTable(cfg, holders, p.callerStats.get); err != nil {
		return err
	}
	for _, rc := range cfg.Routes {
		rt, err := compileRoute(rc, holders, t.callers, p.opts)
		if err != nil {
			return err
		}
		if p.opts.Metrics != nil {
			rt.metrics = p.opts.Metrics.Route(rt.name)
		}
		t.routes = append(t.routes, rt)
	}
	if p.opts.Metrics != nil {
		t.none = p.opts.Metrics.Route(telemetry.RouteNone)
	}
	t.router = newRouter(t.routes)
	p.auditOn.Store(cfg.Log.Requests && cfg.Log.Level != "warn" && cfg.Log.Level != "error")
	for _, rt := range t.routes {
		if rt.cert != nil {
			go rt.watchClientCert(t.stop)
		}
	}
	if old := p.table.Swap(t); old != nil {
		close(old.stop)
	}
	return nil
}

// Serve accepts app connections on ln until Shutdown, within the limits
// (each listener its own), and serves each over HTTP/1.1 or HTTP/2 as it
// speaks (serve.go).
func (p *Proxy) Serve(ln net.Listener) error {
	il := p.inbound(ln)
	sl := &sortedListener{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{}), closer: ln}
	go func() { _ = p.sortConns(il, sl) }()
	err := p.srv.Serve(sl)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// inbound wraps ln in the listener's limits.
func (p *Proxy) inbound(ln net.Listener) *inboundListener {
	l := p.opts.Limits.forListener(ln.Addr())
	return &inboundListener{Listener: ln, lim: newConnLimiter(l, p.opts.Log),
		headerTimeout: l.HeaderTimeout, slack: l.IdleTimeout / rearmDivisor}
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// and closes idle connections. It is safe to call more than once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	err := errors.Join(p.srv.ShutdownWithContext(ctx), p.h2.shutdown(ctx))
	if t := p.table.Load(); t != nil {
		p.stopOnce.Do(func() { close(t.stop) })
	}
	return err
}

// InFlight is the number of requests being handled now.
func (p *Proxy) InFlight() int64 { return p.inflight.Load() }

// Required lists the credentials that some route injects, for readiness.
func (p *Proxy) Required() []string {
	seen := map[string]bool{}
	var out []string
	for _, rt := range p.table.Load().routes {
		for _, name := range rt.credentials() {
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out
}

// requestError answers requests fasthttp could not parse, with the
// statuses fasthttp would use but a JSON body, and counts them under
// route "none".
func (p *Proxy) requestError(ctx *fasthttp.RequestCtx, err error) {
	defer func() {
		if t := p.table.Load(); t.none != nil {
			t.none.Observe(ctx.Response.StatusCode(), time.Since(ctx.Time()), -1)
		}
	}()
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, codeHeaderTooBig, "")
	case errors.As(err, &ne) && ne.Timeout():
		writeError(ctx, fasthttp.StatusRequestTimeout, "request_timeout", "")
	default:
		writeError(ctx, fasthttp.StatusBadRequest, codeBadRequest, "")
	}
}
