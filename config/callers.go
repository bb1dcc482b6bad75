package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
)

var callerKinds = []string{CallerToken, CallerCert, CallerUID}

// callers converts every caller, sorted by name. A caller with problems is
// still listed, so that routes naming it are not reported too.
func (c *checker) callers(fs map[string]*fileCaller) []Caller {
	out := make([]Caller, 0, len(fs))
	certs, uids := map[CertMatch]string{}, map[int]string{}
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		cl := c.caller(name, fs[name])
		path := "callers." + name
		switch {
		case cl.Cert != nil && certs[*cl.Cert] != "":
			c.add(cl.Line, path+".cert", "the same certificate as caller %s", certs[*cl.Cert])
		case cl.Cert != nil:
			certs[*cl.Cert] = name
		case cl.UID >= 0 && uids[cl.UID] != "":
			c.add(cl.Line, path+".uid", "the same uid as caller %s", uids[cl.UID])
		case cl.UID >= 0:
			uids[cl.UID] = name
		}
		out = append(out, cl)
	}
	return out
}

func (c *checker) caller(name string, f *fileCaller) Caller {
	path := "callers." + name
	c.name(f.line, path, name)
	cl := Caller{Name: name, Line: f.line, UID: -1}
	n := 0
	for _, k := range callerKinds {
		if f.has(k) {
			n++
		}
	}
	if n != 1 {
		c.add(f.line, path, "needs exactly one of token, cert and uid")
	}
	cl.Token = c.ref(path+".token", f.Token)
	cl.Cert = c.certMatch(path+".cert", f.Cert)
	if f.UID.ok() {
		if f.UID.v < 0 || f.UID.v > 1<<32-2 {
			c.add(f.UID.line, path+".uid", "%d is not a user ID", f.UID.v)
		} else {
			cl.UID = f.UID.v
		}
	}
	return cl
}

// certMatch reads the one name a client certificate is matched by.
func (c *checker) certMatch(path string, f *fileCallerCert) *CertMatch {
	if f == nil {
		return nil
	}
	m := &CertMatch{}
	if len(f.keys) != 1 {
		c.add(f.line, path, "needs exactly one of uri, dns and cn")
	}
	if f.URI.ok() {
		if u, err := url.Parse(f.URI.v); err != nil || u.Scheme == "" {
			c.add(f.URI.line, path+".uri", "%s is not a URI (e.g. spiffe://cluster.local/ns/app/sa/app)", quote(f.URI.v))
		}
		m.URI = f.URI.v
	}
	if f.DNS.ok() {
		m.DNS = strings.ToLower(f.DNS.v)
		if !validHost(m.DNS) {
			c.add(f.DNS.line, path+".dns", "%s is not a host name", quote(f.DNS.v))
		}
	}
	c.nonEmpty(path+".cn", f.CN, &m.CN)
	return m
}

// Warnings are what is valid but cannot work as written: a caller that no
// listener can identify (a certificate needs tls.client_ca, a uid a
// unix-socket listen), a forward proxy with no route host to intercept.
// validate prints them; run logs them.
func (c *Config) Warnings() []string {
	var out []string
	for _, cl := range c.Callers {
		if cl.Cert != nil && (c.TLS == nil || c.TLS.ClientCA == nil) {
			out = append(out, fmt.Sprintf("%s:%d: callers.%s: a cert caller is never identified without tls.client_ca", c.File, cl.Line, cl.Name))
		}
		if cl.UID >= 0 && !strings.HasPrefix(c.Listen, UnixPrefix) {
			out = append(out, fmt.Sprintf("%s:%d: callers.%s: a uid caller is never identified without a unix-socket listen (listen: unix:PATH)", c.File, cl.Line, cl.Name))
		}
	}
	return append(out, c.forwardWarnings()...)
}

// hasCaller reports whether cfg defines the named caller.
func hasCaller(cfg *Config, name string) bool {
	return slices.ContainsFunc(cfg.Callers, func(cl Caller) bool { return cl.Name == name })
}

// routeCallers reads a route's callers: defined caller names.
func (c *checker) routeCallers(path string, line int, list []*str, cfg *Config) []string {
	if list != nil && len(list) == 0 {
		c.add(line, path, "must not be empty; leave it out to admit every caller")
	}
	var out []string
	for i, s := range list {
		if !s.ok() {
			continue
		}
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case !hasCaller(cfg, s.v):
			c.add(s.line, p, "no caller is named %s", quote(s.v))
		case slices.Contains(out, s.v):
			c.add(s.line, p, "%s is listed twice", quote(s.v))
		default:
			out = append(out, s.v)
		}
	}
	return out
}

// byCaller reads inject.by_caller: a defined caller, admitted by the
// route, to a defined credential.
func (c *checker) byCaller(path string, m map[string]*str, cfg *Config, routeCallers []string) map[string]string {
	if m == nil {
		return nil
	}
	out := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		s := m[name]
		if !s.ok() {
			continue
		}
		p := path + "." + name
		switch {
		case !hasCaller(cfg, name):
			c.add(s.line, p, "no caller is named %s", quote(name))
		case routeCallers != nil && !slices.Contains(routeCallers, name):
			c.add(s.line, p, "caller %s is not among the route's callers", quote(name))
		case cfg.Credential(s.v) == nil:
			c.add(s.line, p, "no credential is named %s", quote(s.v))
		default:
			out[name] = s.v
		}
	}
	return out
}

// allowedHosts reads allowed_hosts: host names, IP addresses or
// "*.suffix" patterns, lower-cased, ports dropped.
func (c *checker) allowedHosts(list []*str) []string {
	var out []string
	for i, s := range list {
		if !s.ok() {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(s.v))
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		if !validHost(strings.TrimPrefix(h, "*.")) {
			c.add(s.line, fmt.Sprintf("allowed_hosts[%d]", i), "%s is not a host name or *.suffix pattern", quote(s.v))
			continue
		}
		out = append(out, h)
	}
	return out
}

// allowedOrigins reads allowed_origins: scheme://host[:port], as browsers
// send Origin: lower case, the scheme's default port left out.
func (c *checker) allowedOrigins(list []*str) []string {
	var out []string
	for i, s := range list {
		if !s.ok() {
			continue
		}
		o, ok := normalizeOrigin(s.v)
		if !ok {
			c.add(s.line, fmt.Sprintf("allowed_origins[%d]", i), "%s is not an origin (scheme://host[:port], e.g. https://app.example.com)", quote(s.v))
			continue
		}
		out = append(out, o)
	}
	return out
}

func normalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(strings.ToLower(strings.TrimSpace(s)))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	host := u.Host
	if p := u.Port(); (u.Scheme == "http" && p == "80") || (u.Scheme == "https" && p == "443") {
		host = u.Hostname()
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
	}
	return u.Scheme + "://" + host, true
}

// reachable reports the listeners that the network can reach while no
// caller is defined and anonymous use is not allowed: anyone who reaches
// them would borrow every credential.
func (c *checker) reachable(f *fileConfig, cfg *Config) {
	if len(cfg.Callers) > 0 || cfg.AllowAnonymous {
		return
	}
	check := func(path string, s *str, accepted string) {
		if s.ok() && s.v == accepted && Reachable(s.v) {
			c.add(s.line, path, "%s is reachable from the network: define callers (who may use the credentials), "+
				"listen on loopback or a unix socket, or set allow_anonymous: true", quote(s.v))
		}
	}
	check("listen", f.Listen, cfg.Listen)
	if f.TLS != nil && cfg.TLS != nil {
		check("tls.listen", f.TLS.Listen, cfg.TLS.Listen)
	}
	if f.ForwardProxy != nil && cfg.ForwardProxy != nil {
		check("forward_proxy.listen", f.ForwardProxy.Listen, cfg.ForwardProxy.Listen)
	}
}

// Reachable reports whether a listen address can be reached from other
// hosts: anything but a unix socket, a loopback address or localhost. An
// empty host (":8443") listens on every interface.
func Reachable(addr string) bool {
	if strings.HasPrefix(addr, UnixPrefix) {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// Held lists every credential sidekey holds: the configured ones, then the
// token callers' tokens (see Caller.CallerCredential).
func (c *Config) Held() []Credential {
	return append(slices.Clone(c.Credentials), c.CallerCredentials()...)
}
