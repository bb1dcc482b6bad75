package proxy

import (
	"errors"
	"fmt"
	"strings"
)

// defaultTunnelPort is the only port an allow_tunnel pattern without a port
// admits.
const defaultTunnelPort = 443

// A tunnel pattern is one entry of forward_proxy.allow_tunnel. Its grammar,
// which the config package applies too (it imports nothing of ours, so it
// carries its own copy of this rule and both must stay in step):
//
//	pattern  = [ "*." ] name [ ":" port ]
//	         / IPv4address [ ":" port ]
//	         / "[" IPv6address "]" [ ":" port ]
//	name     = label *( "." label ) [ "." ]
//	label    = 1*63( ALPHA / DIGIT / "-" / "_" )
//	port     = decimal 1..65535, no sign, no leading zero
//
// with these constraints:
//
//   - a name is at most 253 characters without its trailing dot; no label
//     begins or ends with "-"; the last label begins with a letter;
//   - "*" appears only as the leading "*." and at most once, and the name
//     after it has at least two labels ("*", "*.", "*.com", "a.*.com",
//     "*a.example.com" and "*.*.example.com" are errors);
//   - an IP literal is never wildcarded, has no zone, and an IPv6 literal
//     is always bracketed; IPv4 is dotted-decimal without leading zeros;
//   - no spaces, userinfo, scheme, path, query or percent-encoding;
//   - letters match case-insensitively, and the trailing dot is ignored.
//
// Meaning:
//
//   - "name" matches that host only; "*.name" matches every host one or
//     more labels below name ("*.amazonaws.com" admits s3.amazonaws.com
//     and a.b.amazonaws.com) but not name itself: list "amazonaws.com"
//     too to admit it. This is smokescreen's rule for "*." globs. Squid's
//     ".name" admits the apex as well; a pattern that spells its apex out
//     says exactly what it admits.
//   - without a port, the pattern admits port 443 only, with one, only that
//     port. A tunnel is raw TCP, so "*.amazonaws.com" with any port would
//     reach SSH or a database on every EC2 host name there is; HTTPS is what
//     HTTPS_PROXY carries. Squid's stock configuration refuses CONNECT to
//     ports other than 443 (SSL_ports) the same way.
//
// This is a syntax check, not a public-suffix check: "*.co.uk" is accepted.

// tunnelPattern is one parsed allow_tunnel entry.
type tunnelPattern struct {
	below bool   // "*." form: host is the suffix, matched one or more labels down
	host  string // canonical, as in target.host
	port  uint16
}

// parseTunnelPattern parses one allow_tunnel entry by the grammar above. It
// needs nothing but the string, so config validation can run the same rule.
func parseTunnelPattern(p string) (tunnelPattern, error) {
	if p == "" {
		return tunnelPattern{}, errors.New("empty pattern")
	}
	below := strings.HasPrefix(p, "*.")
	rest := strings.TrimPrefix(p, "*.")
	if strings.IndexByte(rest, '*') >= 0 {
		return tunnelPattern{}, errors.New(`"*" is allowed only as a leading "*."`)
	}
	t, err := parseAuthority(rest, defaultTunnelPort)
	if err != nil {
		return tunnelPattern{}, err
	}
	if below {
		if t.ip.IsValid() {
			return tunnelPattern{}, errors.New(`"*." before an IP address`)
		}
		if strings.IndexByte(t.host, '.') < 0 {
			return tunnelPattern{}, errors.New(`"*." needs a name of at least two labels after it`)
		}
	}
	return tunnelPattern{below: below, host: t.host, port: t.port}, nil
}

// tunnelAllow is a compiled allow_tunnel list: which CONNECT destinations
// are tunnelled untouched. It is immutable once built and safe for
// concurrent use; a nil *tunnelAllow admits nothing.
type tunnelAllow struct {
	exact map[tunnelKey]struct{} // "name[:port]" and IP literal patterns
	below map[tunnelKey]struct{} // "*.name[:port]" patterns, keyed by name
}

type tunnelKey struct {
	host string
	port uint16
}

// newTunnelAllow compiles patterns, reporting every bad one at once.
func newTunnelAllow(patterns []string) (*tunnelAllow, error) {
	a := &tunnelAllow{exact: map[tunnelKey]struct{}{}, below: map[tunnelKey]struct{}{}}
	var errs []error
	for _, s := range patterns {
		p, err := parseTunnelPattern(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("allow_tunnel %q: %w", s, err))
			continue
		}
		m := a.exact
		if p.below {
			m = a.below
		}
		m[tunnelKey{p.host, p.port}] = struct{}{}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

// allows reports whether t may be tunnelled. t must come from
// parseConnectTarget (canonical host). Cost: one map lookup per label of the
// host, no allocation.
func (a *tunnelAllow) allows(t target) bool {
	if a == nil {
		return false
	}
	if _, ok := a.exact[tunnelKey{t.host, t.port}]; ok {
		return true
	}
	if t.ip.IsValid() {
		return false
	}
	for h := t.host; ; {
		i := strings.IndexByte(h, '.')
		if i < 0 {
			return false
		}
		h = h[i+1:]
		if _, ok := a.below[tunnelKey{h, t.port}]; ok {
			return true
		}
	}
}
