package proxy

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"strconv"

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
	codeNeedsHTTP2    = "route_not_http2"
)

// gRPC status codes of sidekey's own answers (SPEC "Request path").
const (
	grpcInvalidArgument   = 3
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// grpcCodes maps an answer's error code to its gRPC status; what is not
// listed is the upstream's failure, 14 UNAVAILABLE.
var grpcCodes = map[string]int{
	codeNoRoute:        grpcUnimplemented,
	codeMethod:         grpcUnimplemented,
	codeUnauthn:        grpcUnauthenticated,
	codeCallerRefused:  grpcPermissionDenied,
	codeCrossOrigin:    grpcPermissionDenied,
	codeHostNotAllowed: grpcPermissionDenied,
	codeNotProxy:       grpcPermissionDenied,
	codeTimeout:        grpcDeadlineExceeded,
	codeBadRequest:     grpcInvalidArgument,
	codeHeaderTooBig:   grpcResourceExhausted,
	codeBodyTooLarge:   grpcResourceExhausted,
}

// writeGRPCError answers a gRPC request that sidekey answers itself the
// way gRPC clients read: a Trailers-Only response, content-type
// application/grpc, grpc-status and grpc-message, no body (a body would be
// read as a message). The HTTP status stays what it is for any client.
func writeGRPCError(ctx *fasthttp.RequestCtx, status int, code, credential string) {
	grpcStatus, ok := grpcCodes[code]
	if !ok {
		grpcStatus = grpcUnavailable
	}
	msg := code
	if credential != "" {
		msg += ": " + credential
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/grpc")
	ctx.Response.Header.Set("Grpc-Status", strconv.Itoa(grpcStatus))
	ctx.Response.Header.Set("Grpc-Message", msg)
}

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
	if isGRPC(&ctx.Request.Header) {
		writeGRPCError(ctx, status, code, credential)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	body := struct {
		Error      string `json:"error"`
		Credential string `json:"credential,omitempty"`
	}{code, credential}
	b, _ := json.Marshal(body)
	ctx.SetBody(append(b, '\n'))
}
