package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"strings"

	"github.com/sidekey/sidekey/config"
)

// The Host and browser defence (SPEC "Callers"), applied to every request
// on every listener before routing. A web page can make a browser send
// requests to 127.0.0.1 — with a foreign Host after DNS rebinding, or from
// its own origin — and would then borrow every credential sidekey holds.
// A request whose Host is not sidekey's own is refused with 421, one a
// browser sent from another site with 403; neither reaches an upstream.

// Refusal reasons: the error codes of the answers, and the reason label of
// sidekey_callers_refused_total.
const (
	codeHostNotAllowed = "host_not_allowed"
	codeCrossOrigin    = "cross_origin_refused"
	codeUnauthn        = "caller_unauthenticated"
	codeCallerRefused  = "caller_not_allowed"
)

// refusalReasons lists every reason, so that each has its series from
// start-up.
var refusalReasons = []string{codeHostNotAllowed, codeCrossOrigin, codeUnauthn, codeCallerRefused}

// admission is a table's Host and origin policy. Immutable; its methods
// allocate nothing.
type admission struct {
	hosts    map[string]struct{} // route hosts, ACME domains, allowed_hosts
	suffixes []string            // ".example.com" for each "*.example.com"
	origins  map[string]struct{} // allowed_origins, normalised
}

func newAdmission(cfg *config.Config) *admission {
	a := &admission{hosts: map[string]struct{}{}, origins: map[string]struct{}{}}
	for _, rt := range cfg.Routes {
		if rt.Host != "" {
			a.hosts[normalizeHost(rt.Host)] = struct{}{}
		}
	}
	if cfg.TLS != nil && cfg.TLS.ACME != nil {
		for _, d := range cfg.TLS.ACME.Domains {
			a.hosts[normalizeHost(d)] = struct{}{}
		}
	}
	for _, h := range cfg.AllowedHosts {
		if s, ok := strings.CutPrefix(h, "*"); ok {
			a.suffixes = append(a.suffixes, s)
		} else {
			a.hosts[normalizeHost(h)] = struct{}{}
		}
	}
	for _, o := range cfg.AllowedOrigins {
		a.origins[o] = struct{}{}
	}
	return a
}

// hostAllowed reports whether a request's Host (name or address, with or
// without a port) is one of sidekey's own: a loopback name or address, the
// address the connection was accepted on (local), a route host, an ACME
// domain or an allowed host. An absent Host (HTTP/1.0) is admitted: a
// browser always sends one.
func (a *admission) hostAllowed(host []byte, local net.Addr) bool {
	if len(host) == 0 {
		return true
	}
	// An IPv4 literal, the usual Host of a sidecar's clients, is parsed
	// where it stands; a loopback or the listener's own address needs no
	// more. Anything else takes the general way below.
	if c := host[0]; '0' <= c && c <= '9' {
		if ip, ok := parseHostIP(cutPort(host)); ok && (ip.IsLoopback() || isOwnAddress(local, ip)) {
			return true
		}
	}
	var buf [256]byte
	h := bareHost(buf[:0], host)
	if len(h) == 0 {
		return true
	}
	if _, ok := a.hosts[string(h)]; ok {
		return true
	}
	if isLoopbackName(h) {
		return true
	}
	for _, s := range a.suffixes {
		if len(h) > len(s) && string(h[len(h)-len(s):]) == s {
			return true
		}
	}
	ip, ok := parseHostIP(h)
	if !ok {
		return false
	}
	return ip.IsLoopback() || isOwnAddress(local, ip)
}

// isOwnAddress reports whether ip is the address the connection came to.
func isOwnAddress(local net.Addr, ip netip.Addr) bool {
	if ta, ok := local.(*net.TCPAddr); ok {
		own, ok := netip.AddrFromSlice(ta.IP)
		return ok && own.Unmap() == ip
	}
	return false
}

// cutPort cuts a port off an IPv4 or name host; an IPv6 literal, which
// only brackets tell apart from its port, is returned whole.
func cutPort(host []byte) []byte {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host[:i], ':') < 0 {
		return host[:i]
	}
	return host
}

// parseHostIP parses an IP literal host, unmapped. An IPv4 address is
// parsed here, without allocating; an IPv6 one (rare in a Host) through
// netip, which may keep its string.
func parseHostIP(h []byte) (netip.Addr, bool) {
	if bytes.IndexByte(h, ':') >= 0 {
		ip, err := netip.ParseAddr(string(h))
		return ip.Unmap(), err == nil
	}
	var b [4]byte
	for i := range 4 {
		n, digits, lead0 := 0, 0, len(h) > 1 && h[0] == '0'
		for len(h) > 0 && h[0] >= '0' && h[0] <= '9' && digits < 4 {
			n = n*10 + int(h[0]-'0')
			h, digits = h[1:], digits+1
		}
		if digits == 0 || digits > 3 || n > 255 || lead0 && digits > 1 {
			return netip.Addr{}, false // empty, too long, too large, or a leading zero
		}
		b[i] = byte(n)
		if i < 3 {
			if len(h) == 0 || h[0] != '.' {
				return netip.Addr{}, false
			}
			h = h[1:]
		}
	}
	return netip.AddrFrom4(b), len(h) == 0
}

// isLoopbackName reports localhost and its subdomains (RFC 6761: they
// resolve to loopback, and never to a rebinding attacker).
func isLoopbackName(h []byte) bool {
	const name = "localhost"
	return string(h) == name || len(h) > len(name) && string(h[len(h)-len(name)-1:]) == "."+name
}

// bareHost appends host to dst lower-cased, without its port, the
// brackets of an IPv6 literal and a trailing dot.
func bareHost(dst, host []byte) []byte {
	dst = hostKey(dst, host)
	if len(dst) > 1 && dst[0] == '[' && dst[len(dst)-1] == ']' {
		dst = append(dst[:0], dst[1:len(dst)-1]...)
	}
	return bytes.TrimSuffix(dst, []byte("."))
}

// crossOrigin reports a request that a browser sent from another site:
// Sec-Fetch-Site cross-site or same-site, or an Origin that is neither the
// listener's own (scheme and the request's Host) nor an allowed origin.
// An allowed origin is admitted whatever Sec-Fetch-Site says.
func (a *admission) crossOrigin(origin, site, host []byte, tls bool) bool {
	if len(origin) > 0 && a.allowedOrigin(origin) {
		return false
	}
	if bytes.EqualFold(site, []byte("cross-site")) || bytes.EqualFold(site, []byte("same-site")) {
		return true
	}
	return len(origin) > 0 && !ownOrigin(origin, host, tls)
}

// allowedOrigin reports an Origin listed in allowed_origins.
func (a *admission) allowedOrigin(origin []byte) bool {
	if len(a.origins) == 0 || len(origin) > 255 {
		return false
	}
	var buf [256]byte
	_, ok := a.origins[string(lowerASCII(buf[:0], origin))]
	return ok
}

// ownOrigin reports whether origin is scheme://host of the listener the
// request came to, the scheme's default port left out on both sides.
func ownOrigin(origin, host []byte, tls bool) bool {
	scheme, port := "http://", ":80"
	if tls {
		scheme, port = "https://", ":443"
	}
	if len(origin) < len(scheme) || !bytes.EqualFold(origin[:len(scheme)], []byte(scheme)) {
		return false
	}
	o := bytes.TrimSuffix(origin[len(scheme):], []byte(port))
	h := bytes.TrimSuffix(host, []byte(port))
	return len(h) > 0 && bytes.EqualFold(o, h)
}

func lowerASCII(dst, s []byte) []byte {
	for _, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}
