package proxy

import (
	"bytes"
	"net"

	"github.com/valyala/fasthttp"
)

// The upstream's answer is the app's, with two corrections that keep the
// app inside sidekey: a redirect to the upstream is mapped back onto the
// URL the app called (or the app would follow it around sidekey, without
// a credential), and a live secret the upstream echoes in a header is
// masked (or the app would see the credential it must never see).

const (
	headerLocation        = "Location"
	headerContentLocation = "Content-Location"
)

// headerPair is one response header as the pass below leaves it.
type headerPair struct {
	key, value []byte
	changed    bool
}

// fixResponseHeaders maps Location and Content-Location and masks echoed
// secrets. The common case — nothing to change — is one pass that only
// looks; the headers are rewritten, in a second pass, only when one needs
// it. Nothing is allocated when nothing changes (the scratch lives in x).
func (p *Proxy) fixResponseHeaders(ctx *fasthttp.RequestCtx, x *exchange, rt *route) {
	h := &ctx.Response.Header
	sc := p.opts.Scrub
	dirty := false
	for k, v := range h.All() {
		if isLocationHeader(k) || sc != nil && len(v) >= minScrubbed && sc.Contains(v) {
			dirty = true
			break
		}
	}
	if !dirty {
		return
	}
	x.pairs, x.hbuf = x.pairs[:0], x.hbuf[:0]
	scrubbed, changedAny := 0, false
	for k, v := range h.All() {
		nv, changed := v, false
		if isLocationHeader(k) {
			start := len(x.hbuf)
			if x.hbuf, changed = rt.mapLocation(x.hbuf, v, x); changed {
				nv = x.hbuf[start:]
			}
		}
		if sc != nil && len(nv) >= minScrubbed {
			if s := sc.Bytes(nv); !sameBytes(s, nv) {
				nv, changed = s, true
				scrubbed++
			}
		}
		x.pairs = append(x.pairs, headerPair{key: k, value: nv, changed: changed})
		changedAny = changedAny || changed
	}
	if !changedAny {
		return
	}
	rewriteHeaders(h, x)
	if scrubbed > 0 && rt.scrubbed != nil {
		rt.scrubbed.Add(uint64(scrubbed))
	}
}

// minScrubbed is the shortest header value that can hold a secret: the
// redactor masks nothing shorter (telemetry.MinSecretLen).
const minScrubbed = 6

// rewriteHeaders sets again, in their order, every value of each header
// that has a changed value: a header that occurs more than once (Set-Cookie,
// Link) keeps its other values. The pairs are views of the header's memory,
// so what is set is copied first.
func rewriteHeaders(h *fasthttp.ResponseHeader, x *exchange) {
	keys := x.pairs[:0:0] // the edited keys, one pair each
	for _, pr := range x.pairs {
		if pr.changed && !containsKey(keys, pr.key) {
			keys = append(keys, pr)
		}
	}
	var copied []headerPair
	for _, pr := range x.pairs {
		if containsKey(keys, pr.key) {
			start := len(x.hbuf)
			x.hbuf = append(append(x.hbuf, pr.key...), pr.value...)
			copied = append(copied, headerPair{key: x.hbuf[start : start+len(pr.key)], value: x.hbuf[start+len(pr.key):]})
		}
	}
	for i, pr := range copied {
		if !containsKey(copied[:i], pr.key) {
			h.DelBytes(pr.key)
		}
	}
	for _, pr := range copied {
		h.AddBytesKV(pr.key, pr.value)
	}
}

func containsKey(ps []headerPair, k []byte) bool {
	for _, p := range ps {
		if bytes.EqualFold(p.key, k) {
			return true
		}
	}
	return false
}

func isLocationHeader(k []byte) bool {
	switch len(k) {
	case len(headerLocation):
		return bytes.EqualFold(k, []byte(headerLocation))
	case len(headerContentLocation):
		return bytes.EqualFold(k, []byte(headerContentLocation))
	}
	return false
}

// sameBytes reports whether a and b are the same memory (a scrubber
// returns its input when it changed nothing).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// mapLocation appends to dst the URL the app should follow for a Location
// value v that points at the route's upstream — absolute (the upstream's
// scheme and host, its default port written or not), scheme-relative, or a
// path under the upstream's base path when the route rewrites paths — as
// nginx's proxy_redirect default does: the upstream's origin becomes the
// one the app called (its scheme and Host), the upstream's base path the
// route's prefix. A value that points elsewhere is left alone (false).
func (rt *route) mapLocation(dst, v []byte, x *exchange) ([]byte, bool) {
	path, absolute, ok := rt.upstreamRelative(v)
	if !ok {
		return dst, false
	}
	rest, under := cutBasePath(path, rt.basePath)
	if !under {
		return dst, false
	}
	if !absolute && rt.basePath == "" && !rt.strip {
		return dst, false // the same path on both sides
	}
	if absolute && len(x.appHost) > 0 && !x.unix {
		if x.tls {
			dst = append(dst, "https://"...)
		} else {
			dst = append(dst, "http://"...)
		}
		dst = append(dst, x.appHost...)
	}
	if rt.strip {
		dst = append(dst, rt.prefix[:len(rt.prefix)-1]...) // "/github/" -> "/github", then rest's '/'
	}
	if len(rest) == 0 || rest[0] != '/' {
		dst = append(dst, '/')
	}
	return append(dst, rest...), true
}

// upstreamRelative returns the path, query and fragment of v when v is a
// URL on the route's upstream (absolute: true) or an absolute path.
func (rt *route) upstreamRelative(v []byte) (path []byte, absolute, ok bool) {
	switch {
	case len(v) == 0:
		return nil, false, false
	case len(v) > 1 && v[0] == '/' && v[1] == '/': // scheme-relative
		rest, ok := rt.cutUpstreamHost(v[2:])
		return rest, true, ok
	case v[0] == '/':
		return v, false, rt.strip || rt.basePath != ""
	}
	i := bytes.Index(v, []byte("://"))
	if i <= 0 || !bytes.EqualFold(v[:i], []byte(rt.scheme)) {
		return nil, false, false
	}
	rest, ok := rt.cutUpstreamHost(v[i+3:])
	return rest, true, ok
}

// cutUpstreamHost cuts the upstream's host (and its port, or none for the
// scheme's default port) off the front of an authority and what follows.
func (rt *route) cutUpstreamHost(v []byte) ([]byte, bool) {
	end := bytes.IndexAny(v, "/?#")
	if end < 0 {
		end = len(v)
	}
	auth, rest := v[:end], v[end:]
	host, port := auth, []byte(nil)
	if h, p, err := net.SplitHostPort(string(auth)); err == nil {
		host, port = []byte(h), []byte(p)
	}
	if !bytes.EqualFold(host, []byte(rt.upName)) {
		return nil, false
	}
	if len(port) == 0 {
		port = []byte(rt.defaultPort())
	}
	return rest, string(port) == rt.upPort
}

// defaultPort is the port of the route's upstream scheme.
func (rt *route) defaultPort() string {
	if rt.scheme == "https" {
		return "443"
	}
	return "80"
}

// cutBasePath returns what follows base in path, when path is base or
// under it.
func cutBasePath(path []byte, base string) ([]byte, bool) {
	if !bytes.HasPrefix(path, []byte(base)) {
		return nil, false
	}
	rest := path[len(base):]
	return rest, len(rest) == 0 || rest[0] == '/' || rest[0] == '?' || rest[0] == '#'
}
