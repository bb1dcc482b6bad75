// Package proxy is sidekey's request path on fasthttp: the app-facing
// listener, the router, the forwarder that injects a credential snapshot into
// each request and streams the exchange, the websocket tunnel, and the admin
// API. It never talks to a credential backend itself: it takes values from
// injector holders, one atomic snapshot per request. The forward-proxy
// listener (Forward) adds no request path of its own: it hands the
// connections it intercepts to the app-facing listener's server.
//
// A request flows router -> injector snapshot -> forwarder -> response.
// Nothing here holds a fasthttp.RequestCtx after its handler returns, except
// through fasthttp's own Hijack and body-stream hand-offs.
package proxy
