package proxy

import (
	"errors"

	"github.com/sidekey/sidekey/config"
)

// The forward proxy's policy (SPEC forward_proxy): what a CONNECT or an
// absolute-form request on the forward-proxy listener may reach.
//
//   - A CONNECT to a route host is intercepted: sidekey terminates the TLS
//     with a leaf its CA issues for that host and serves the requests
//     inside on the proxy's own request path. The ports are 443, the port
//     of https:// as an app calls it, and the port of any of the host's
//     routes whose upstream is that host itself at a port of its own
//     ("https://api.internal:8443": the app calls the upstream's URL, and
//     sidekey stands in its place). An upstream elsewhere ("https://10.0.3.4:8443",
//     a gateway) adds no port: the app calls https://HOST, and where
//     sidekey sends the request is the route's business, not the app's.
//   - An absolute-form http:// request to a route host is served the same
//     way, on port 80 and the same upstream ports.
//   - A CONNECT that allow_tunnel lists is tunnelled untouched, through
//     the egress guard (its name resolved once, internal ranges refused
//     unless allow_addresses lists them, the checked address dialled).
//   - Everything else is refused: 403 destination_not_allowed.
//
// A route host is intercepted before allow_tunnel is looked at: a
// destination cannot be both injected into and passed through.

// Default ports of what the forward proxy intercepts.
const (
	interceptPort = 443 // CONNECT: https://HOST
	plainPort     = 80  // absolute-form: http://HOST
)

// forwardPolicy is one configuration of the forward proxy, immutable once
// built; a reload swaps in a new one.
type forwardPolicy struct {
	ca        LeafIssuer             // nil when nothing is intercepted
	intercept map[tunnelKey]struct{} // CONNECT destinations intercepted
	plain     map[tunnelKey]struct{} // absolute-form destinations served
	tunnel    *tunnelAllow
	egress    egressGuard
}

// newForwardPolicy compiles cfg's forward_proxy section and route hosts.
func newForwardPolicy(cfg *config.Config, ca LeafIssuer, opts ForwardOptions) (*forwardPolicy, error) {
	fp := cfg.ForwardProxy
	if fp == nil {
		return nil, errors.New("forward proxy: the configuration has no forward_proxy section")
	}
	pol := &forwardPolicy{ca: ca, intercept: map[tunnelKey]struct{}{}, plain: map[tunnelKey]struct{}{},
		egress: egressGuard{resolver: opts.Resolver, dialer: opts.Dial, allow: fp.AllowAddresses}}
	for _, rt := range cfg.Routes {
		pol.addRoute(rt)
	}
	if len(pol.intercept) > 0 && ca == nil {
		return nil, errors.New("forward proxy: routes have hosts to intercept but there is no CA")
	}
	var err error
	if pol.tunnel, err = newTunnelAllow(fp.AllowTunnel); err != nil {
		return nil, err
	}
	return pol, nil
}

// addRoute adds a route host's destinations. A host that no CONNECT could
// name (parseConnectTarget would refuse it) adds nothing.
func (pol *forwardPolicy) addRoute(rt config.Route) {
	if rt.Host == "" {
		return
	}
	t, err := parseAuthority(rt.Host, interceptPort)
	if err != nil {
		return
	}
	pol.intercept[tunnelKey{t.host, interceptPort}] = struct{}{}
	pol.plain[tunnelKey{t.host, plainPort}] = struct{}{}
	if rt.Upstream == nil || rt.Upstream.Port() == "" {
		return
	}
	up, err := parseAuthority(rt.Upstream.Host, 0)
	if err != nil || up.host != t.host {
		return
	}
	pol.intercept[tunnelKey{t.host, up.port}] = struct{}{}
	pol.plain[tunnelKey{t.host, up.port}] = struct{}{}
}

// intercepts reports whether a CONNECT to t is intercepted.
func (pol *forwardPolicy) intercepts(t target) bool {
	_, ok := pol.intercept[tunnelKey{t.host, t.port}]
	return ok
}

// serves reports whether an absolute-form request to t is served.
func (pol *forwardPolicy) serves(t target) bool {
	_, ok := pol.plain[tunnelKey{t.host, t.port}]
	return ok
}
