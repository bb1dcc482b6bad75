package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// forwardProxy reads the forward_proxy section. It needs cfg's routes: the
// route hosts are what it intercepts, and a generated CA that intercepts
// them must be written somewhere the apps can read it.
func (c *checker) forwardProxy(f *fileForwardProxy, cfg *Config) *ForwardProxy {
	if f == nil {
		return nil
	}
	p := &ForwardProxy{Line: f.line}
	c.require(&f.meta, "forward_proxy", "listen")
	c.listen("forward_proxy.listen", f.Listen, &p.Listen)
	p.CA = c.forwardCA(f, len(cfg.RouteHosts()) > 0)
	p.AllowTunnel = c.allowTunnel(f.AllowTunnel)
	p.AllowAddresses = c.allowAddresses(f.AllowAddresses)
	return p
}

// forwardCA reads forward_proxy.ca: where its public files go, and a CA
// of one's own (cert and key, both references, both or neither).
func (c *checker) forwardCA(f *fileForwardProxy, intercepts bool) ForwardCA {
	var ca ForwardCA
	fc := f.CA
	if fc == nil {
		if intercepts {
			c.add(f.line, "forward_proxy", "ca is required: the apps must be given the CA certificate (ca.cert_out or ca.bundle_out) to trust what sidekey intercepts")
		}
		return ca
	}
	c.filePath("forward_proxy.ca.cert_out", fc.CertOut, &ca.CertOut)
	c.filePath("forward_proxy.ca.bundle_out", fc.BundleOut, &ca.BundleOut)
	ca.Cert = c.ref("forward_proxy.ca.cert", fc.Cert)
	ca.Key = c.ref("forward_proxy.ca.key", fc.Key)
	switch {
	case fc.has("cert") != fc.has("key"):
		c.add(fc.line, "forward_proxy.ca", "cert and key go together: give both (a CA of your own) or neither (one generated in memory)")
	case !fc.has("cert") && !fc.has("cert_out") && !fc.has("bundle_out") && intercepts:
		c.add(fc.line, "forward_proxy.ca", "a generated CA needs cert_out or bundle_out: the apps must be given its certificate to trust it")
	}
	if ca.CertOut != "" && ca.CertOut == ca.BundleOut {
		c.add(fc.BundleOut.line, "forward_proxy.ca.bundle_out", "must not be the same file as cert_out")
	}
	return ca
}

// allowTunnel reads allow_tunnel: patterns by checkTunnelPattern,
// lower-cased.
func (c *checker) allowTunnel(list []*str) []string {
	var out []string
	for i, s := range list {
		if !s.ok() {
			continue
		}
		if err := checkTunnelPattern(s.v); err != nil {
			c.add(s.line, fmt.Sprintf("forward_proxy.allow_tunnel[%d]", i), "%s: %v", quote(s.v), err)
			continue
		}
		out = append(out, strings.ToLower(s.v))
	}
	return out
}

// allowAddresses reads allow_addresses: CIDR prefixes, or single
// addresses (a /32 or /128).
func (c *checker) allowAddresses(list []*str) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		if !s.ok() {
			continue
		}
		p, err := parseAllowAddress(s.v)
		if err != nil {
			c.add(s.line, fmt.Sprintf("forward_proxy.allow_addresses[%d]", i), "%s: %v", quote(s.v), err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// parseAllowAddress parses one allow_addresses entry. An IPv4-mapped IPv6
// range (::ffff:10.0.0.0/104) is the IPv4 range it maps (10.0.0.0/8): the
// proxy checks every destination address unmapped, so the mapped form
// would never match anything. A range with bits set past its length is
// refused rather than silently masked: "10.1.2.3/8" is likely a typo for a
// narrower range.
func parseAllowAddress(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, errors.New("not a CIDR range (e.g. 10.0.0.0/8, fd00::/8) or an address")
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, errors.New("not a CIDR range (e.g. 10.0.0.0/8, fd00::/8) or an address")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errors.New("an IPv4-mapped range must be /96 or longer")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("has bits set past its /%d: write %s", p.Bits(), m)
	}
	return p, nil
}

// checkTunnelPattern checks one allow_tunnel entry. The grammar is the
// proxy's (proxy/tunnel_allow.go), which this must keep in step with; the
// proxy's tests check that both agree:
//
//	pattern = [ "*." ] name [ ":" port ] / IPv4 [ ":" port ] / "[" IPv6 "]" [ ":" port ]
//
// A name has labels of 1 to 63 letters, digits, "-" and "_", none
// beginning or ending with "-", at most 253 characters without one
// trailing dot, and its last label begins with a letter. "*" appears only
// as the leading "*.", followed by at least two labels, never before an
// IP. IPv4 is dotted-decimal without leading zeros, IPv6 bracketed without
// a zone. The port is 1 to 65535 without sign or leading zero.
func checkTunnelPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	below := strings.HasPrefix(p, "*.")
	rest := strings.TrimPrefix(p, "*.")
	if strings.IndexByte(rest, '*') >= 0 {
		return errors.New(`"*" is allowed only as a leading "*."`)
	}
	host, isIP, err := checkAuthority(rest)
	switch {
	case err != nil:
		return err
	case below && isIP:
		return errors.New(`"*." before an IP address`)
	case below && !strings.Contains(host, "."):
		return errors.New(`"*." needs a name of at least two labels after it`)
	}
	return nil
}

// checkAuthority checks host[:port] and returns the host (without
// brackets and one trailing dot) and whether it is an IP literal.
func checkAuthority(s string) (string, bool, error) {
	if s == "" {
		return "", false, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch <= ' ' || ch >= 0x7f:
			return "", false, errors.New("whitespace, control or non-ASCII character")
		case ch == '@':
			return "", false, errors.New("userinfo")
		case ch == '/' || ch == '\\' || ch == '?' || ch == '#':
			return "", false, errors.New("path, query or fragment")
		case ch == '%':
			return "", false, errors.New("percent-encoding or zone ID")
		}
	}
	host, port, hasPort, bracketed, err := splitTunnelAuthority(s)
	if err != nil {
		return "", false, err
	}
	if hasPort {
		if err := checkTunnelPort(port); err != nil {
			return "", false, err
		}
	}
	if bracketed {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", false, errors.New("brackets around something not an IPv6 address")
		}
		return host, true, nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return host, true, nil
	}
	name, err := checkTunnelName(host)
	return name, false, err
}

func splitTunnelAuthority(s string) (host, port string, hasPort, bracketed bool, err error) {
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, false, errors.New("unclosed bracket")
		}
		host, rest := s[1:end], s[end+1:]
		switch {
		case rest == "":
			return host, "", false, true, nil
		case rest[0] != ':':
			return "", "", false, false, errors.New("text after bracket")
		}
		return host, rest[1:], true, true, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", false, false, nil
	}
	if strings.IndexByte(s[:i], ':') >= 0 {
		return "", "", false, false, errors.New("IPv6 address without brackets")
	}
	return s[:i], s[i+1:], true, false, nil
}

func checkTunnelPort(s string) error {
	switch {
	case s == "":
		return errors.New("missing port")
	case len(s) > 5 || s[0] == '0':
		return errors.New("port out of range")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return errors.New("port not a number")
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 65535 {
		return errors.New("port out of range")
	}
	return nil
}

func checkTunnelName(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	switch {
	case h == "":
		return "", errors.New("empty host")
	case len(h) > 253:
		return "", errors.New("name longer than 253 characters")
	}
	for label := range strings.SplitSeq(h, ".") {
		switch {
		case label == "":
			return "", errors.New("empty label")
		case len(label) > 63:
			return "", errors.New("label longer than 63 characters")
		case label[0] == '-' || label[len(label)-1] == '-':
			return "", errors.New("label begins or ends with a hyphen")
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '_') {
				return "", errors.New("invalid character in name")
			}
		}
	}
	last := h[strings.LastIndexByte(h, '.')+1:]
	if ch := last[0] | 0x20; ch < 'a' || ch > 'z' {
		return "", errors.New("last label does not begin with a letter")
	}
	return h, nil
}

// forwardWarnings: a forward proxy that intercepts nothing, because no
// route has a host, only tunnels (allow_tunnel) and refuses; no CA is made
// and nothing is written.
func (c *Config) forwardWarnings() []string {
	if c.ForwardProxy == nil || len(c.RouteHosts()) > 0 {
		return nil
	}
	return []string{fmt.Sprintf("%s:%d: forward_proxy: no route has a match.host, so nothing is intercepted "+
		"(only allow_tunnel destinations pass) and no CA is made", c.File, c.ForwardProxy.Line)}
}
