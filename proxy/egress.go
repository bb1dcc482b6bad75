package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"
)

// codeDestinationNotAllowed is the error code of a refused forward-proxy
// destination (SPEC: forward_proxy).
const codeDestinationNotAllowed = "destination_not_allowed"

// defaultEgressTimeout bounds a tunnel's lookup and dial together when the
// guard names no timeout.
const defaultEgressTimeout = 10 * time.Second

// minAttemptTimeout is the least time one address of several gets before
// the next is tried (net.Dialer's own floor for the same split).
const minAttemptTimeout = 2 * time.Second

var (
	// errDestinationForbidden: a tunnel's destination resolves into an
	// address range that sidekey does not reach unless allow_addresses lists
	// it. The listener answers 403 destination_not_allowed. The error is a
	// *forbiddenError, which names the address and the range for the log;
	// the response says only the code, never the address, so a client
	// cannot map internal DNS through sidekey.
	errDestinationForbidden = errors.New("destination not allowed")
	// errResolve: the destination's name did not resolve (or resolved to
	// nothing). Nothing was dialled; the listener answers as for an
	// unreachable upstream (502, or 504 on a lookup timeout).
	errResolve = errors.New("resolving destination")
)

// forbiddenError is an errDestinationForbidden with what was refused.
type forbiddenError struct {
	addr  netip.Addr // the refused address, unmapped, without zone
	class string     // the range it fell in, a short fixed word: "loopback", "private", ...
}

func (e *forbiddenError) Error() string {
	return fmt.Sprintf("%v: %v is %s", errDestinationForbidden, e.addr, e.class)
}

func (e *forbiddenError) Unwrap() error { return errDestinationForbidden }

// Resolver looks up the addresses of a host name; *net.Resolver implements
// it. network is "ip", "ip4" or "ip6".
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// egressGuard connects tunnels to their destinations without letting them
// reach the host's own or its networks' internal addresses (SSRF).
//
// dial resolves a name once, refuses the destination if any address is
// forbidden (see addrClass) and not in allow, and then dials the checked
// addresses themselves, never the name: a second lookup could answer
// differently (DNS rebinding) and would escape the check.
//
// The zero value is usable: net.DefaultResolver, a plain net.Dialer,
// defaultEgressTimeout, and no exceptions. A guard is read-only after it is
// built and safe for concurrent use.
type egressGuard struct {
	resolver Resolver       // nil: net.DefaultResolver
	dialer   dialFunc       // nil: a zero net.Dialer's DialContext
	allow    []netip.Prefix // allow_addresses: reachable whatever their range
	timeout  time.Duration  // lookup and dial together; 0: defaultEgressTimeout
}

// dialFunc is net.Dialer.DialContext's signature. The guard calls it with
// "tcp" and a literal ip:port, never a name.
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// dial connects to t. It returns a *forbiddenError (errDestinationForbidden)
// when t is, or resolves to, a forbidden address; an errResolve error when the
// name does not resolve; otherwise the first dial error, as net.Dialer does.
// An IP literal is checked the same way, without a lookup.
//
// When a name has several addresses, one forbidden address refuses the
// destination, even if others are public. Whoever controls the name's DNS
// controls the mix, and a public name that also publishes an internal
// address is a misconfiguration or an attack, not something to work around
// address by address; and a destination that is refused always, rather than
// only when the internal address happens to be tried, is one an operator can
// see and fix (with allow_addresses). The permitted addresses are then tried
// in the resolver's order (RFC 6724 for *net.Resolver) until one connects,
// each given its share of the time left, as net.Dialer does for a name.
func (g *egressGuard) dial(ctx context.Context, t target) (net.Conn, error) {
	timeout := g.timeout
	if timeout <= 0 {
		timeout = defaultEgressTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := g.resolve(ctx, t)
	if err != nil {
		return nil, err
	}
	return g.dialAddrs(ctx, addrs, t.port)
}

// resolve returns the addresses to dial for t, each checked.
func (g *egressGuard) resolve(ctx context.Context, t target) ([]netip.Addr, error) {
	if t.ip.IsValid() {
		a, err := g.check(t.ip)
		if err != nil {
			return nil, err
		}
		return []netip.Addr{a}, nil
	}
	r := g.resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", t.host)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", errResolve, t.host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w %s: no addresses", errResolve, t.host)
	}
	checked := make([]netip.Addr, len(addrs)) // the resolver's slice may be shared
	for i, a := range addrs {
		if checked[i], err = g.check(a); err != nil {
			return nil, err
		}
	}
	return checked, nil
}

// check returns the address to dial for a (a itself, an IPv4-mapped address
// as its IPv4 address), or a *forbiddenError. Mapped addresses are not
// exotic: *net.Resolver returns a hosts-file IPv4 entry as ::ffff:127.0.0.1.
func (g *egressGuard) check(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	bare := a.WithZone("") // netip.Prefix.Contains never matches a zoned address
	if g.allowed(bare) {
		return a, nil
	}
	class := addrClass(bare)
	if class == "" {
		return a, nil
	}
	if v4, ok := nat64Embedded(bare); ok && g.allowed(v4) {
		return a, nil
	}
	return netip.Addr{}, &forbiddenError{addr: bare, class: class}
}

func (g *egressGuard) allowed(a netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// dialAddrs dials addrs in order until one connects.
func (g *egressGuard) dialAddrs(ctx context.Context, addrs []netip.Addr, port uint16) (net.Conn, error) {
	dial := g.dialer
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	var first error
	for i, a := range addrs {
		ap := netip.AddrPortFrom(a, port)
		c, err := dialAttempt(ctx, dial, ap, len(addrs)-i)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = fmt.Errorf("dialing %v: %w", ap, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// dialAttempt dials one of remaining addresses, within its share of ctx's
// time. Cancelling the attempt's context afterwards does not touch a
// connection already made.
func dialAttempt(ctx context.Context, dial dialFunc, ap netip.AddrPort, remaining int) (net.Conn, error) {
	if d, ok := ctx.Deadline(); ok && remaining > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, attemptDeadline(time.Now(), d, remaining))
		defer cancel()
	}
	return dial(ctx, "tcp", ap.String())
}

// attemptDeadline is the deadline for one of remaining addresses still to
// try before deadline: an equal share of the time left, at least
// minAttemptTimeout, never past deadline.
func attemptDeadline(now, deadline time.Time, remaining int) time.Time {
	left := deadline.Sub(now)
	share := left / time.Duration(remaining)
	if share < minAttemptTimeout {
		share = min(minAttemptTimeout, left)
	}
	return now.Add(share)
}

// egressStatus maps an error from parsing, matching or dialling a tunnel's
// destination to its status and code: 400 for a malformed target, 403
// destination_not_allowed for a forbidden address, and errorStatus's answer
// (502, 504 on timeouts) for the rest, a failed lookup included.
func egressStatus(err error) (int, string) {
	switch {
	case errors.Is(err, errBadTarget):
		return fasthttp.StatusBadRequest, codeBadRequest
	case errors.Is(err, errDestinationForbidden):
		return fasthttp.StatusForbidden, codeDestinationNotAllowed
	}
	return errorStatus(err)
}

// IPv4 ranges a tunnel may not reach unless allow_addresses lists them: those
// of the IANA IPv4 Special-Purpose Address Registry (RFC 6890) that are not
// globally reachable, the documentation ranges among them, and all of
// 192.0.0.0/24 including its few anycast /32s, which no tunnel needs.
var forbiddenV4 = []struct {
	prefix netip.Prefix
	class  string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"}, // "this network": 0.0.0.0 reaches the host itself
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "cgnat"}, // also Alibaba Cloud's metadata, 100.100.100.200
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"}, // cloud metadata 169.254.169.254
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"}, // IETF protocol assignments
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "reserved"}, // deprecated 6to4 relay anycast
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // and 255.255.255.255, broadcast
}

var (
	globalUnicastV6 = netip.MustParsePrefix("2000::/3")
	nat64V6         = netip.MustParsePrefix("64:ff9b::/96")
)

// IPv6 ranges inside 2000::/3 that are forbidden. Everything outside 2000::/3
// is forbidden already: ::, ::1, the deprecated IPv4-compatible ::/96,
// 100::/64 (discard), fc00::/7 (unique local, AWS's fd00:ec2::254 metadata
// among them), fe80::/10, the old site-local fec0::/10 and ff00::/8.
var forbiddenV6 = []struct {
	prefix netip.Prefix
	class  string
}{
	// IETF protocol assignments: Teredo 2001::/32 (which tunnels to an
	// IPv4 address it hides), benchmarking 2001:2::/48, ORCHID and the like.
	{netip.MustParsePrefix("2001::/23"), "reserved"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	// 6to4 (deprecated, RFC 7526) delivers to the IPv4 address in bits
	// 16-48 by protocol 41, which may be a private one. No service needs it
	// any more, so it is refused whole rather than judged by that address.
	{netip.MustParsePrefix("2002::/16"), "6to4"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
}

// addrClass returns the name of the forbidden range a falls in, or "" for an
// address a tunnel may reach. a is unmapped and without zone; an invalid
// address is "invalid".
//
// IPv4-mapped addresses (::ffff:0:0/96) have been unmapped by the caller:
// the kernel sends them as IPv4, so they are that IPv4 address in every
// respect, allow_addresses included. NAT64 addresses of the well-known prefix
// 64:ff9b::/96 are judged by the IPv4 address they embed: on an IPv6-only
// network with DNS64 every IPv4-only site arrives in that form, and the
// translator would deliver 64:ff9b::a00:1 to 10.0.0.1. A network-specific
// NAT64 prefix cannot be recognised from the address alone; its translator
// must keep to RFC 6052 §3.1 and not translate to non-global IPv4.
func addrClass(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "invalid"
	case a.Is4():
		for _, r := range forbiddenV4 {
			if r.prefix.Contains(a) {
				return r.class
			}
		}
		return ""
	}
	if v4, ok := nat64Embedded(a); ok {
		if class := addrClass(v4); class != "" {
			return "nat64 " + class
		}
		return ""
	}
	if !globalUnicastV6.Contains(a) {
		return ipv6Class(a)
	}
	for _, r := range forbiddenV6 {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ""
}

// ipv6Class names an IPv6 address outside 2000::/3, all of which is forbidden.
func ipv6Class(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private" // unique local fc00::/7
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	}
	return "reserved"
}

// nat64Embedded returns the IPv4 address in a NAT64 address of the
// well-known prefix.
func nat64Embedded(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() || !nat64V6.Contains(a) {
		return netip.Addr{}, false
	}
	b := a.As16()
	return netip.AddrFrom4([4]byte(b[12:])), true
}
