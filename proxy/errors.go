package proxy

import (
	"encoding/json"
	"errors"
	"net"
	"os"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/injector"
)

// Error codes in JSON error bodies. They are part of the external contract.
const (
	codeNoRoute       = "no_route"
	codeUnavailable   = "credential_unavailable"
	codeNotProxy      = "absolute_form_refused"
	codeMethod        = "method_not_allowed"
	codeBadRequest    = "bad_request"
	codeUpstream      = "upstream_unavailable"
	codeTimeout       = "upstream_timeout"
	codeUpstreamBusy  = "upstream_busy"
	codeHeaderTooBig  = "request_header_too_large"
	codeUnauthorized  = "unauthorized"
	codeNotFound      = "not_found"
	codeRotateFailed  = "rotate_failed"
	codeInternalError = "internal_error"
	codeBodyTooLarge  = "request_body_too_large"
	codeEncodedBody   = "upstream_body_encoded"
)

// errorStatus maps an error from the request path to its status and code.
// It is the one place where failures become HTTP answers.
func errorStatus(err error) (int, string) {
	var ne net.Error
	switch {
	case errors.Is(err, injector.ErrUnavailable):
		return fasthttp.StatusServiceUnavailable, codeUnavailable
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fasthttp.StatusGatewayTimeout, codeTimeout
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return fasthttp.StatusServiceUnavailable, codeUpstreamBusy
	case errors.Is(err, errEncodedBody):
		return fasthttp.StatusBadGateway, codeEncodedBody
	}
	return fasthttp.StatusBadGateway, codeUpstream
}

// writeError answers with a JSON error body. credential, when set, names the
// credential that was unavailable; it is a name, never a value.
func writeError(ctx *fasthttp.RequestCtx, status int, code, credential string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	body := struct {
		Error      string `json:"error"`
		Credential string `json:"credential,omitempty"`
	}{code, credential}
	b, _ := json.Marshal(body)
	ctx.SetBody(append(b, '\n'))
}
