package proxy

import (
	"bytes"
	"iter"

	"github.com/valyala/fasthttp"
)

// hopHeaders are hop-by-hop headers (RFC 9110 section 7.6.1) removed in both
// directions, as net/http/httputil's ReverseProxy does. Connection and
// Transfer-Encoding are handled separately: fasthttp manages their framing.
// Trailer is not one of them: it announces the trailer fields, which are
// relayed with the chunked body they end (RFC 9110 section 6.6.2).
var hopHeaders = []string{
	"Keep-Alive",
	"Proxy-Connection",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Upgrade",
}

// stripRequestHops removes hop-by-hop headers from an app request, keeping
// Connection and Upgrade on a protocol upgrade (the tunnel needs them).
// mask is hopMask of its headers: it deletes only what is there.
func stripRequestHops(h *fasthttp.RequestHeader, mask uint16, upgrade bool) {
	if mask == 0 {
		return
	}
	if mask&hopConnection != 0 {
		delListed(h.Peek(fasthttp.HeaderConnection), h.DelBytes)
		if !upgrade {
			h.Del(fasthttp.HeaderConnection)
		}
	}
	for i, k := range hopHeaders {
		if mask&(1<<i) != 0 && !(upgrade && k == "Upgrade") {
			h.Del(k)
		}
	}
}

// stripResponseHops removes hop-by-hop headers from an upstream response.
// Connection: close stays (fasthttp needs it to retire the upstream
// connection); the server decides about the app's connection by itself.
func stripResponseHops(h *fasthttp.ResponseHeader) {
	mask := hopMask(h.All())
	if mask == 0 {
		return
	}
	if mask&hopConnection != 0 {
		delListed(h.Peek(fasthttp.HeaderConnection), h.DelBytes)
	}
	for i, k := range hopHeaders {
		if mask&(1<<i) != 0 {
			h.Del(k)
		}
	}
}

// hopConnection is hopMask's bit for a Connection header.
const hopConnection = 1 << 15

// hopMask reports, one bit per hopHeaders entry (and hopConnection), which
// hop-by-hop headers are present.
func hopMask(all iter.Seq2[[]byte, []byte]) uint16 {
	var mask uint16
	for k := range all {
		mask |= hopBit(k)
	}
	return mask
}

// scanRequest reads an app request's headers once into x: their hop-by-hop
// mask, the first X-Request-Id, Origin and Sec-Fetch-Site (copied: header
// edits reuse the memory of a deleted header's value). It reads the raw
// header lines rather than fasthttp's parsed headers, whose iteration
// parses the Cookie header into cookies, and the request would then go
// upstream with its cookies written anew (quotes dropped, lines merged)
// instead of as the app sent them.
func scanRequest(h *fasthttp.RequestHeader, x *exchange) {
	var mask uint16
	x.rid, x.origin, x.site = x.rid[:0], x.origin[:0], x.site[:0]
	found := false
	raw := h.RawHeaders()
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue
		}
		k := line[:c]
		mask |= hopBit(k)
		switch len(k) { // the value is trimmed only for the three wanted
		case len(headerRequestID):
			if !found && k[0]|0x20 == 'x' && bytes.EqualFold(k, headerRequestIDKey) {
				x.rid, found = append(x.rid, bytes.TrimSpace(line[c+1:])...), true
			}
		case len(headerOrigin):
			if k[0]|0x20 == 'o' && bytes.EqualFold(k, []byte(headerOrigin)) {
				x.origin = append(x.origin[:0], bytes.TrimSpace(line[c+1:])...)
			}
		case len(headerSecFetchSite):
			if k[0]|0x20 == 's' && bytes.EqualFold(k, []byte(headerSecFetchSite)) {
				x.site = append(x.site[:0], bytes.TrimSpace(line[c+1:])...)
			}
		}
	}
	x.hops = mask
}

const (
	headerOrigin       = "Origin"
	headerSecFetchSite = "Sec-Fetch-Site"
)

// hopBit is the hopMask bit of a header name, or 0. The name is compared
// only with the hop-by-hop names of its length.
func hopBit(k []byte) uint16 {
	if len(k) >= len(hopByLen) {
		return 0
	}
	for _, h := range hopByLen[len(k)] {
		if k[0]|0x20 == h.name[0]|0x20 && bytes.EqualFold(k, []byte(h.name)) {
			return h.bit
		}
	}
	return 0
}

type hopName struct {
	name string
	bit  uint16
}

// hopByLen lists the hop-by-hop names, Connection included, by length.
var hopByLen = func() (t [len("Proxy-Authorization") + 1][]hopName) {
	for i, n := range hopHeaders {
		t[len(n)] = append(t[len(n)], hopName{n, 1 << i})
	}
	n := fasthttp.HeaderConnection
	t[len(n)] = append(t[len(n)], hopName{n, hopConnection})
	return t
}()

// delListed deletes every header named in a Connection value, except the
// connection options fasthttp itself interprets.
func delListed(conn []byte, del func([]byte)) {
	for len(conn) > 0 {
		var tok []byte
		if i := bytes.IndexByte(conn, ','); i >= 0 {
			tok, conn = conn[:i], conn[i+1:]
		} else {
			tok, conn = conn, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || isConnOption(tok) {
			continue
		}
		del(tok)
	}
}

func isConnOption(tok []byte) bool {
	return bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) ||
		bytes.EqualFold(tok, []byte("upgrade"))
}

// isUpgrade reports a protocol upgrade request (websockets).
func isUpgrade(h *fasthttp.RequestHeader) bool {
	return h.ConnectionUpgrade() && len(h.Peek(fasthttp.HeaderUpgrade)) > 0
}

// conflictingFraming reports a request that carries both Content-Length and
// Transfer-Encoding: a request-smuggling shape. fasthttp lets
// Transfer-Encoding win; a proxy refuses the request instead, so that no
// upstream can read it differently.
func conflictingFraming(h *fasthttp.RequestHeader) bool {
	if h.ContentLength() != -1 {
		return false
	}
	raw := h.RawHeaders()
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if k, _, ok := bytes.Cut(line, []byte(":")); ok &&
			bytes.EqualFold(bytes.TrimSpace(k), []byte(fasthttp.HeaderContentLength)) {
			return true
		}
	}
	return false
}

// requestEditor adapts a fasthttp request to injector.Request.
type requestEditor struct {
	r      *fasthttp.Request
	scheme string // upstream scheme, for SignableRequest.URL
}

// SetHeader and DelHeader get canonical names (injector.Request), which
// fasthttp would otherwise normalise again on every call: SetCanonical takes
// the name as it is, and Del does with normalising off for the call, then
// back on, as the server (which normalises names it reads) left it.
func (e *requestEditor) SetHeader(name string, v []byte) {
	e.r.Header.SetCanonical([]byte(name), v)
}

func (e *requestEditor) DelHeader(name string) {
	h := &e.r.Header
	h.DisableNormalizing()
	h.Del(name)
	h.EnableNormalizing()
}

func (e *requestEditor) SetQueryArg(name string, v []byte) {
	e.r.URI().QueryArgs().SetBytesV(name, v)
}
func (e *requestEditor) DelQueryArg(name string) { e.r.URI().QueryArgs().Del(name) }
