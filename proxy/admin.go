package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/valyala/fasthttp"

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
	// Token, when non-empty, is required as a bearer token on POST calls.
	Token string
	// Scrub removes live secret values from a body; nil leaves it as is.
	Scrub func([]byte) []byte
	// RotateTimeout bounds a forced refresh; zero means 30s.
	RotateTimeout time.Duration
	Log           logrus.FieldLogger

	srv *fasthttp.Server
}

// Serve answers admin requests on ln until Shutdown.
func (a *Admin) Serve(ln net.Listener) error {
	a.srv = &fasthttp.Server{
		Handler:               a.handle,
		Logger:                telemetry.Printf{Log: a.Log},
		ReadTimeout:           10 * time.Second,
		IdleTimeout:           60 * time.Second,
		MaxRequestBodySize:    4 << 10,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
	}
	err := a.srv.Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops the admin server; safe before Serve and more than once.
func (a *Admin) Shutdown(ctx context.Context) error {
	if a.srv == nil {
		return nil
	}
	return a.srv.ShutdownWithContext(ctx)
}

func (a *Admin) handle(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case path == "/healthz":
		a.get(ctx, func() { ctx.SetContentType("text/plain; charset=utf-8"); ctx.SetBodyString("ok\n") })
	case path == "/readyz":
		a.get(ctx, func() { a.readyz(ctx) })
	case path == "/v1/credentials":
		a.get(ctx, func() { a.writeJSON(ctx, fasthttp.StatusOK, a.Credentials.Statuses()) })
	case path == "/v1/certificates":
		a.get(ctx, func() { a.writeJSON(ctx, fasthttp.StatusOK, []struct{}{}) })
	case strings.HasPrefix(path, "/v1/credentials/") && strings.HasSuffix(path, "/rotate"):
		a.rotate(ctx, strings.TrimSuffix(strings.TrimPrefix(path, "/v1/credentials/"), "/rotate"))
	default:
		writeError(ctx, fasthttp.StatusNotFound, codeNotFound, "")
	}
}

func (a *Admin) get(ctx *fasthttp.RequestCtx, answer func()) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, codeMethod, "")
		return
	}
	answer()
}

// notReady is one credential that keeps the proxy from being ready.
type notReady struct {
	Credential string `json:"credential"`
	State      string `json:"state"`
	LastError  string `json:"last_error,omitempty"`
}

func (a *Admin) readyz(ctx *fasthttp.RequestCtx) {
	var missing []notReady
	for _, name := range a.Required() {
		h := a.Credentials.Holder(name)
		if v, err := h.Acquire(); err == nil {
			v.Release()
			continue
		}
		st := h.Status()
		missing = append(missing, notReady{Credential: name, State: st.State, LastError: st.LastError})
	}
	if len(missing) > 0 {
		a.writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"ready": false, "not_ready": missing})
		return
	}
	a.writeJSON(ctx, fasthttp.StatusOK, map[string]any{"ready": true})
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
	if a.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) == 1
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
