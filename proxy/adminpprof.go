package proxy

import (
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// pprofPrefix is where admin.pprof serves Go's profiles.
const pprofPrefix = "/debug/pprof/"

// SetPprof turns /debug/pprof/ on the admin listener on or off. It serves
// net/http/pprof's handlers, and only to requests with the admin token:
// profiles show the process's code, its goroutines and memory layout (a
// heap profile holds sizes and stacks, never the bytes of a value), and a
// CPU profile or trace costs CPU while it runs. Safe to call while serving
// (a reload changes it).
func (a *Admin) SetPprof(on bool) { a.pprof.Store(on) }

// profile answers a /debug/pprof/ request: 401 without the admin token,
// and also when none is set, which validation already refuses.
func (a *Admin) profile(ctx *fasthttp.RequestCtx, path string) {
	if tok := a.token.Load(); tok == nil || *tok == "" || !a.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="sidekey-admin"`)
		writeError(ctx, fasthttp.StatusUnauthorized, codeUnauthorized, "")
		return
	}
	var h http.HandlerFunc
	switch strings.TrimPrefix(path, pprofPrefix) {
	case "cmdline":
		h = pprof.Cmdline
	case "profile":
		h = pprof.Profile
	case "symbol":
		h = pprof.Symbol
	case "trace":
		h = pprof.Trace
	default: // the index and the named profiles: heap, goroutine, allocs...
		h = pprof.Index
	}
	fasthttpadaptor.NewFastHTTPHandlerFunc(h)(ctx)
}
