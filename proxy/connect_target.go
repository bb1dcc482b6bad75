package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// errBadTarget: a forward-proxy request names its destination in a form
// sidekey does not accept. The listener answers 400. The wrapped reason says
// what was wrong; it never repeats the input, which may carry a user:password
// the client put in front of the host.
var errBadTarget = errors.New("bad destination")

// target is the destination of a forward-proxy request: a CONNECT's
// authority-form request-target, or the authority of an absolute-form
// http:// request. It is canonical, so two spellings of one destination give
// equal values and a target can be compared, matched and logged as is.
type target struct {
	// host is lower case without a trailing dot, or an IP literal in
	// netip's canonical form (no brackets, no zone).
	host string
	port uint16     // 1..65535
	ip   netip.Addr // valid exactly when host is an IP literal
}

// String returns host:port, with brackets around an IPv6 literal.
func (t target) String() string {
	return net.JoinHostPort(t.host, strconv.Itoa(int(t.port)))
}

// parseConnectTarget parses the request-target of a CONNECT (RFC 9110
// §9.3.6: authority-form, uri-host ":" port, the port required).
//
// It accepts "name:port", "a.b.c.d:port" and "[v6]:port". It lower-cases a
// name and strips one trailing dot from it. It refuses everything a URI
// authority could carry besides host and port (userinfo, a path, a query, a
// fragment, percent-encoding, IPv6 zone IDs), whitespace, control and
// non-ASCII bytes (an internationalised name must arrive as its xn--
// A-label), an IPv6 literal without brackets, brackets around anything but an
// IPv6 literal, and a name that checkName refuses. See parsePort for the port.
func parseConnectTarget(s string) (target, error) {
	t, err := parseAuthority(s, 0)
	if err != nil {
		return target{}, fmt.Errorf("%w: %w", errBadTarget, err)
	}
	return t, nil
}

// parseAbsoluteTarget parses the destination of an absolute-form request
// (RFC 9112 §3.2.2) such as "http://Example.com:8080/path?q": the scheme must
// be http (any case), the authority ends at the first "/", "?" or "#", and its
// port is optional (80 when absent, never empty). The authority follows the
// rules of parseConnectTarget; what comes after it is not examined here.
// Checking that the Host header agrees is the caller's business.
func parseAbsoluteTarget(uri string) (target, error) {
	const scheme = "http://"
	if len(uri) < len(scheme) || !strings.EqualFold(uri[:len(scheme)], scheme) {
		return target{}, fmt.Errorf("%w: not an http:// URI", errBadTarget)
	}
	rest := uri[len(scheme):]
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	t, err := parseAuthority(rest, 80)
	if err != nil {
		return target{}, fmt.Errorf("%w: %w", errBadTarget, err)
	}
	return t, nil
}

// parseAuthority parses host[:port]. defaultPort 0 makes the port required.
// Its errors are bare reasons; the callers say what was being parsed.
func parseAuthority(s string, defaultPort uint16) (target, error) {
	if s == "" {
		return target{}, badTarget("empty")
	}
	if err := checkAuthorityBytes(s); err != nil {
		return target{}, err
	}
	host, port, hasPort, bracketed, err := splitAuthority(s)
	if err != nil {
		return target{}, err
	}
	t := target{port: defaultPort}
	if hasPort || defaultPort == 0 {
		if t.port, err = parsePort(port); err != nil {
			return target{}, err
		}
	}
	if t.host, t.ip, err = parseHost(host, bracketed); err != nil {
		return target{}, err
	}
	return t, nil
}

// checkAuthorityBytes refuses the bytes that have no place in a host:port:
// controls, space, non-ASCII, and the delimiters of userinfo, path, query,
// fragment and percent-encoding (a backslash too: WHATWG parsers read it as a
// slash).
func checkAuthorityBytes(s string) error {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f:
			return badTarget("whitespace, control or non-ASCII character")
		case c == '@':
			return badTarget("userinfo")
		case c == '/' || c == '\\' || c == '?' || c == '#':
			return badTarget("path, query or fragment")
		case c == '%':
			return badTarget("percent-encoding or zone ID")
		}
	}
	return nil
}

// splitAuthority splits host[:port] where host may be "[...]". hasPort
// reports whether a ":" introduced a port (which may then be empty).
func splitAuthority(s string) (host, port string, hasPort, bracketed bool, err error) {
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, false, badTarget("unclosed bracket")
		}
		host, rest := s[1:end], s[end+1:]
		switch {
		case rest == "":
			return host, "", false, true, nil
		case rest[0] != ':':
			return "", "", false, false, badTarget("text after bracket")
		}
		return host, rest[1:], true, true, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", false, false, nil
	}
	if strings.IndexByte(s[:i], ':') >= 0 {
		return "", "", false, false, badTarget("IPv6 address without brackets")
	}
	return s[:i], s[i+1:], true, false, nil
}

// parsePort parses a decimal port 1..65535 without sign or leading zero.
func parsePort(s string) (uint16, error) {
	switch {
	case s == "":
		return 0, badTarget("missing port")
	case len(s) > 5 || s[0] == '0':
		return 0, badTarget("port out of range")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, badTarget("port not a number")
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 65535 {
		return 0, badTarget("port out of range")
	}
	return uint16(n), nil
}

// parseHost returns the canonical host and, for an IP literal, its address.
// A bracketed host must be an IPv6 literal (an IPv4-mapped one included); an
// unbracketed one an IPv4 literal in dotted-decimal or a name (checkName).
func parseHost(h string, bracketed bool) (string, netip.Addr, error) {
	if bracketed {
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() {
			return "", netip.Addr{}, badTarget("brackets around something not an IPv6 address")
		}
		return a.String(), a, nil
	}
	if a, err := netip.ParseAddr(h); err == nil && a.Is4() {
		return a.String(), a, nil
	}
	name, err := checkName(h)
	return name, netip.Addr{}, err
}

// checkName validates a DNS name and returns it lower-cased without one
// trailing dot. The rules, which allow_tunnel patterns share:
//
//   - 1 to 253 characters once the trailing dot is gone;
//   - labels separated by single dots, each 1 to 63 of a-z, A-Z, 0-9, "-"
//     and "_" (underscores appear in real host names), never beginning or
//     ending with "-";
//   - the last label begins with a letter. No top-level domain begins
//     with a digit, and a name such as "127.1", "2130706433" or
//     "0x7f.0.0.1" is one that some resolvers read as an IPv4 address:
//     refusing it keeps every address a visible IP literal.
func checkName(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	switch {
	case h == "":
		return "", badTarget("empty host")
	case len(h) > 253:
		return "", badTarget("name longer than 253 characters")
	}
	for label := range strings.SplitSeq(h, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	last := h[strings.LastIndexByte(h, '.')+1:]
	if c := last[0] | 0x20; c < 'a' || c > 'z' {
		return "", badTarget("last label does not begin with a letter")
	}
	return strings.ToLower(h), nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return badTarget("empty label")
	case len(l) > 63:
		return badTarget("label longer than 63 characters")
	case l[0] == '-' || l[len(l)-1] == '-':
		return badTarget("label begins or ends with a hyphen")
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return badTarget("invalid character in name")
		}
	}
	return nil
}

// badTarget is the reason a host:port was refused. It never quotes the input.
func badTarget(reason string) error { return errors.New(reason) }
