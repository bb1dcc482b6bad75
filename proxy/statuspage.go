package proxy

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"strings"

	"github.com/valyala/fasthttp"
)

// statusHTML is the admin listener's status page (GET /): one file, its
// styles and script inline, nothing loaded from elsewhere. It reads the
// JSON endpoints and follows /v1/events.
//
//go:embed statuspage.html
var statusHTML string

// statusCSP is the page's Content-Security-Policy: nothing may load but its
// own inline style and script, allowed by their hashes, and it may connect
// only to the admin listener itself (fetch, EventSource). It may not be
// framed, submit forms or change its base URL.
var statusCSP = "default-src 'none'; " +
	"script-src " + inlineHashes(statusHTML, "script") + "; " +
	"style-src " + inlineHashes(statusHTML, "style") + "; " +
	"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// inlineHashes lists the CSP sources ('sha256-...') of the contents of
// every <tag> element in html, exactly as the browser hashes them.
func inlineHashes(html, tag string) string {
	var out []string
	open, end := "<"+tag+">", "</"+tag+">"
	for rest := html; ; {
		i := strings.Index(rest, open)
		if i < 0 {
			break
		}
		rest = rest[i+len(open):]
		j := strings.Index(rest, end)
		if j < 0 {
			break
		}
		sum := sha256.Sum256([]byte(rest[:j]))
		out = append(out, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		rest = rest[j+len(end):]
	}
	if len(out) == 0 {
		return "'none'"
	}
	return strings.Join(out, " ")
}

// statusPage answers GET / with the status page. The page holds no data
// of its own: what it shows it fetches, like any other client of the
// admin API, so it reveals nothing the API does not.
func (a *Admin) statusPage(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.SetContentType("text/html; charset=utf-8")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBodyString(statusHTML)
}

// routes lists the routes for /v1/routes.
func (a *Admin) routes() any {
	if a.Routes == nil {
		return []struct{}{}
	}
	if v := a.Routes(); v != nil {
		return v
	}
	return []struct{}{}
}
