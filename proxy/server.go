package proxy

import (
	"context"
	"errors"
	"net"
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
	// Log receives audit lines and request-path diagnostics.
	Log logrus.FieldLogger
	// AuditRequests writes one line per proxied request.
	AuditRequests bool

	table    atomic.Pointer[table]
	srv      *fasthttp.Server
	inflight atomic.Int64
	rids     *requestIDs
}

// table is one routing configuration, immutable once built.
type table struct {
	router *router
	routes []*route
}

// Server limits shared by the app-facing listener.
const (
	serverReadBuffer = 16 << 10         // request line and headers; larger gets 431
	bufferedBodyMax  = 64 << 10         // bodies up to this are buffered (replayable), larger ones stream
	headerTimeout    = 60 * time.Second // time to read a request's headers
	idleTimeout      = 90 * time.Second // keep-alive idle
)

// New builds the proxy for cfg's routes, taking credentials from holders.
func New(cfg *config.Config, holders Holders, log logrus.FieldLogger) (*Proxy, error) {
	p := &Proxy{Log: log, AuditRequests: cfg.Log.Requests, rids: newRequestIDs()}
	t, err := buildTable(cfg.Routes, holders)
	if err != nil {
		return nil, err
	}
	p.table.Store(t)
	p.srv = &fasthttp.Server{
		Handler:                      p.handle,
		ErrorHandler:                 requestErrorHandler,
		Logger:                       telemetry.Printf{Log: log},
		ReadBufferSize:               serverReadBuffer,
		ReadTimeout:                  headerTimeout,
		IdleTimeout:                  idleTimeout,
		MaxRequestBodySize:           bufferedBodyMax,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
	}
	return p, nil
}

func buildTable(rcs []config.Route, holders Holders) (*table, error) {
	t := &table{}
	for _, rc := range rcs {
		rt, err := compileRoute(rc, holders)
		if err != nil {
			return nil, err
		}
		t.routes = append(t.routes, rt)
	}
	t.router = newRouter(t.routes)
	return t, nil
}

// Serve accepts app connections on ln until Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	err := p.srv.Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// and closes idle connections. It is safe to call more than once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	return p.srv.ShutdownWithContext(ctx)
}

// InFlight is the number of requests being handled now.
func (p *Proxy) InFlight() int64 { return p.inflight.Load() }

// Required lists the credentials that some route injects, for readiness.
func (p *Proxy) Required() []string {
	seen := map[string]bool{}
	var out []string
	for _, rt := range p.table.Load().routes {
		if rt.credential != "" && !seen[rt.credential] {
			seen[rt.credential] = true
			out = append(out, rt.credential)
		}
	}
	return out
}

// requestErrorHandler answers requests fasthttp could not parse, with the
// statuses fasthttp would use but a JSON body.
func requestErrorHandler(ctx *fasthttp.RequestCtx, err error) {
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
