package proxy

import (
	"bytes"
	"net/textproto"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/config"
)

// tokenPlace is where an app's request to a route may carry a caller
// token: the very place the route injects its credential, so that a legacy
// app whose API-key setting cannot be removed simply holds its caller token
// there. The form strips that place before injecting, so the token never
// reaches the upstream.
type tokenPlace struct {
	kind   placeKind
	header string // canonical header name (placeBearer, placeBasic: Authorization)
	prefix []byte // placeHeader: the format around the value, when the app kept it
	suffix []byte
	param  string // placeQuery
}

type placeKind uint8

const (
	placeNone   placeKind = iota // aws-sigv4: only Proxy-Authorization carries a token
	placeBearer                  // Authorization: Bearer TOKEN
	placeBasic                   // Authorization: Basic, the token as the password
	placeHeader                  // the named header, with or without its format
	placeQuery                   // the named query parameter
)

func newTokenPlace(in config.Inject) tokenPlace {
	switch in.As {
	case config.AsBearer, "":
		return tokenPlace{kind: placeBearer, header: fasthttp.HeaderAuthorization}
	case config.AsBasic:
		return tokenPlace{kind: placeBasic, header: fasthttp.HeaderAuthorization}
	case config.AsHeader:
		tp := tokenPlace{kind: placeHeader, header: textproto.CanonicalMIMEHeaderKey(in.Header)}
		if pre, suf, ok := strings.Cut(in.Format, "%s"); ok {
			tp.prefix, tp.suffix = []byte(pre), []byte(suf)
		}
		return tp
	case config.AsQuery:
		return tokenPlace{kind: placeQuery, param: in.Param}
	}
	return tokenPlace{}
}

// token returns the token req carries in the place, or nil; a Basic
// password is decoded into scratch, which it returns, possibly grown. The
// token is a view of req's memory: use it before the request is edited.
func (tp *tokenPlace) token(req *fasthttp.Request, scratch []byte) ([]byte, []byte) {
	switch tp.kind {
	case placeBearer:
		tok, _ := cutScheme(req.Header.Peek(tp.header), "Bearer")
		return tok, scratch
	case placeBasic:
		if enc, ok := cutScheme(req.Header.Peek(tp.header), "Basic"); ok {
			return basicPassword(enc, scratch)
		}
	case placeHeader:
		v := req.Header.Peek(tp.header)
		if len(v) >= len(tp.prefix)+len(tp.suffix) && bytes.HasPrefix(v, tp.prefix) && bytes.HasSuffix(v, tp.suffix) {
			v = v[len(tp.prefix) : len(v)-len(tp.suffix)]
		}
		return bytes.TrimSpace(v), scratch
	case placeQuery:
		return req.URI().QueryArgs().Peek(tp.param), scratch
	}
	return nil, scratch
}
