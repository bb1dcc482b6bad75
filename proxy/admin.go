package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/events"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

// Credentials is what the admin API needs of the credential holders;
// *injector.Set implements it.
type Credentials interface {
	Holders
	Statuses() []injector.Status
}

// Admin serves health, readiness and the credential API (SPEC "Admin API").
// Answers never carry a secret: statuses hold names, versions and
// fingerprints, and every body passes through Scrub as a last defence.
type Admin struct {
	Credentials Credentials
	// Required lists the credentials some route injects; readiness needs
	// each to hold a valid value.
	Required func() []string
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// Certificates lists the certificates for /v1/certificates; nil: none.
	Certificates func() any
	// Callers lists the callers' use for /v1/callers; nil: none.
	Callers func() []CallerInfo
	// CertificateProblems names certificates that keep the proxy unready.
	CertificateProblems func() []NotReady
	// Scrub removes live secret values from a body; nil leaves it as is.
	Scrub func([]byte) []byte
	// RotateTimeout bounds a forced refresh; zero means 30s.
	RotateTimeout time.Duration
	Log           logrus.FieldLogger
	// Events streams /v1/events (and feeds the status page); nil answers
	// 404 there.
	Events *events.Broker
	// Heartbeat is how often an idle event stream gets a comment line, so
	// that clients and middleboxes see it alive; zero is 15s.
	Heartbeat time.Duration
	// Routes lists the routes for /v1/routes; nil: none.
	Routes func() any

	writeWait time.Duration // eventsWriteWait unless set (tests)
	pprof     atomic.Bool

	srvMu   sync.Mutex // guards srv, built by the first Serve
	token   atomic.Pointer[string]
	admit   atomic.Pointer[admission]
	metrics fasthttp.RequestHandler
	srv     *fasthttp.Server
}

// SetPolicy sets the Host and browser defence from cfg (allowed_hosts,
// allowed_origins): the admin API answers only requests for its own
// names, never a web page's rebound or cross-site ones. Safe to call while
// serving (a reload changes it); before the first call nothing is refused.
func (a *Admin) SetPolicy(cfg *config.Config) {
	a.admit.Store(newAdmission(&config.Config{AllowedHosts: cfg.AllowedHosts, AllowedOrigins: cfg.AllowedOrigins}))
}

// SetToken sets the admin token required on POST calls; "" requires none.
// Safe to call while serving (a reload changes it).
func (a *Admin) SetToken(token string) { a.token.Store(&token) }

// Serve answers admin requests on ln until Shutdown. It may be called again
// for another listener, concurrently with Shutdown.
func (a *Admin) Serve(ln net.Listener) error {
	err := a.server().Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// server returns the admin server, built on first use.
func (a *Admin) server() *fasthttp.Server {
	a.srvMu.Lock()
	defer a.srvMu.Unlock()
	if a.srv != nil {
		return a.srv
	}
	if a.Metrics != nil {
		a.metrics = fasthttpadaptor.NewFastHTTPHandler(a.Metrics)
	}
	a.srv = &fasthttp.Server{
		Handler:               a.handle,
		Logger:                telemetry.Printf{Log: a.Log},
		ReadTimeout:           10 * time.Second,
		IdleTimeout:           60 * time.Second,
		MaxRequestBodySize:    4 << 10,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
	}
	return a.srv
}

// Shutdown stops the admin server; safe before Serve and more than once.
func (a *Admin) Shutdown(ctx context.Context) error {
	a.srvMu.Lock()
	srv := a.srv
	a.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.ShutdownWithContext(ctx)
}

func (a *Admin) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	if code := a.refusal(ctx, path); code != "" {
		status := fasthttp.StatusForbidden
		if code == codeHostNotAllowed {
			status = fasthttp.StatusMisdirectedRequest
		}
		writeError(ctx, status, code, "")
		return
	}
	switch {
	case path == "/healthz":
		a.get(ctx, func() { ctx.SetContentType("text/plain; charset=utf-8"); ctx.SetBodyString("ok\n") })
	case path == "/readyz":
		a.get(ctx, func() { a.readyz(ctx) })
	case path == "/v1/credentials":
		a.get(ctx, func() { a.writeJSON(ctx, fasthttp.StatusOK, a.Credentials.Statuses()) })
	case path == "/metrics" && a.metrics != nil:
		a.get(ctx, func() { a.metrics(ctx) })
	case path == "/v1/certificates":
		a.get(ctx, func() { a.writeJSON(ctx, fasthttp.StatusOK, a.certificates()) })
	case path == "/v1/callers":
		a.get(ctx, func() { a.writeJSON(ctx, fasthttp.StatusOK, a.callers()) })
	case strings.HasPrefix(path, "/v1/credentials/") && strings.HasSuffix(path, "/rotate"):
		a.rotate(ctx, strings.TrimSuffix(strings.TrimPrefix(path, "/v1/credentials/"), "/rotate"))
	case path == "/v1/events" && a.Events != nil:
		a.get(ctx, func() { a.events(ctx) })
	case path == "/v1/routes":
		a.get(ctx, func() { a.writeJSON(ctx, fasthttp.StatusOK, a.routes()) })
	case path == "/":
		a.get(ctx, func() { a.statusPage(ctx) })
	case strings.HasPrefix(path, pprofPrefix) && a.pprof.Load():
		a.profile(ctx, path)
	default:
		writeError(ctx, fasthttp.StatusNotFound, codeNotFound, "")
	}
}

// refusal applies the Host and browser defence to an admin request. A
// liveness probe (/healthz) passes whatever its Host: load balancers send
// their own, and it tells nothing.
func (a *Admin) refusal(ctx *fasthttp.RequestCtx, path string) string {
	ad := a.admit.Load()
	if ad == nil {
		return ""
	}
	h := &ctx.Request.Header
	if path != "/healthz" && !ad.hostAllowed(h.Host(), ctx.LocalAddr()) {
		return codeHostNotAllowed
	}
	if ad.crossOrigin(h.Peek(headerOrigin), h.Peek(headerSecFetchSite), h.Host(), ctx.IsTLS()) {
		return codeCrossOrigin
	}
	return ""
}

func (a *Admin) get(ctx *fasthttp.RequestCtx, answer func()) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, codeMethod, "")
		return
	}
	answer()
}

// NotReady is one credential or certificate that keeps the proxy from being
// ready, or (under "degraded") one whose refresh is failing.
type NotReady struct {
	Credential  string `json:"credential,omitempty"`
	Certificate string `json:"certificate,omitempty"`
	State       string `json:"state"`
	LastError   string `json:"last_error,omitempty"`
}

func (a *Admin) callers() []CallerInfo {
	if a.Callers == nil {
		return []CallerInfo{}
	}
	return a.Callers()
}

func (a *Admin) certificates() any {
	if a.Certificates == nil {
		return []struct{}{}
	}
	if v := a.Certificates(); v != nil {
		return v
	}
	return []struct{}{}
}

// readyz is 503 naming every credential a route needs that has no valid
// value; otherwise 200, with a "degraded" list of credentials whose refresh
// is failing while their value is still valid, so that an orchestrator can
// alert before anything breaks.
func (a *Admin) readyz(ctx *fasthttp.RequestCtx) {
	var missing, degraded []NotReady
	for _, name := range a.Required() {
		h := a.Credentials.Holder(name)
		if h == nil {
			continue
		}
		st := h.Status()
		entry := NotReady{Credential: name, State: st.State, LastError: st.LastError}
		v, err := h.Acquire()
		if err != nil {
			missing = append(missing, entry)
			continue
		}
		v.Release()
		if st.LastError != "" {
			degraded = append(degraded, entry)
		}
	}
	if a.CertificateProblems != nil {
		missing = append(missing, a.CertificateProblems()...)
	}
	if len(missing) > 0 {
		a.writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"ready": false, "not_ready": missing})
		return
	}
	body := map[string]any{"ready": true}
	if len(degraded) > 0 {
		body["degraded"] = degraded
	}
	a.writeJSON(ctx, fasthttp.StatusOK, body)
}

func (a *Admin) rotate(ctx *fasthttp.RequestCtx, name string) {
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, codeMethod, "")
		return
	}
	if !a.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="sidekey-admin"`)
		writeError(ctx, fasthttp.StatusUnauthorized, codeUnauthorized, "")
		return
	}
	h := a.Credentials.Holder(name)
	if h == nil {
		writeError(ctx, fasthttp.StatusNotFound, codeNotFound, "")
		return
	}
	timeout := a.RotateTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	rctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := h.Refresh(rctx); err != nil {
		a.Log.WithField(telemetry.FieldCredential, name).WithError(err).Warn("forced rotation failed")
		a.writeJSON(ctx, fasthttp.StatusBadGateway, map[string]string{
			"error": codeRotateFailed, "credential": name, "message": err.Error()})
		return
	}
	a.writeJSON(ctx, fasthttp.StatusOK, h.Status())
}

// authorized checks the admin token in constant time.
func (a *Admin) authorized(ctx *fasthttp.RequestCtx) bool {
	want := a.token.Load()
	if want == nil || *want == "" {
		return true
	}
	got, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(*want)) == 1
}

func (a *Admin) writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, codeInternalError, "")
		return
	}
	if a.Scrub != nil {
		b = a.Scrub(b)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}
