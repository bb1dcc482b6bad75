package config

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

var (
	injectForms = []string{AsBearer, AsHeader, AsBasic, AsQuery, AsSigV4}
	injectKeys  = map[string]keySet{
		AsBearer: {},
		AsHeader: {uses: []string{"header", "format"}, needs: []string{"header"}},
		AsBasic:  {uses: []string{"username"}},
		AsQuery:  {uses: []string{"param"}, needs: []string{"param"}},
		AsSigV4:  {uses: []string{"region", "service"}, needs: []string{"region", "service"}},
	}
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$") // RFC 9110 token
)

// routes converts the routes in file order.
func (c *checker) routes(fs []*fileRoute, cfg *Config) []Route {
	out := make([]Route, 0, len(fs))
	seen := routesSeen{names: map[string]int{}, matches: map[[2]string]int{}}
	for i, f := range fs {
		if f == nil {
			continue // an empty list item, already reported
		}
		path := fmt.Sprintf("routes[%d]", i)
		r := c.route(path, f, cfg)
		c.unique(path, f, r, seen)
		out = append(out, r)
	}
	return out
}

// routesSeen maps the names and the (host, path_prefix) matches of the
// routes so far to their lines.
type routesSeen struct {
	names   map[string]int
	matches map[[2]string]int
}

// unique reports a route whose name or match an earlier route has.
func (c *checker) unique(path string, f *fileRoute, r Route, seen routesSeen) {
	if first, dup := seen.names[r.Name]; dup {
		c.add(f.Name.line, path+".name", "%s is already the name of the route at line %d", quote(r.Name), first)
	} else if r.Name != "" {
		seen.names[r.Name] = r.Line
	}
	if f.Match == nil {
		return
	}
	key := [2]string{r.Host, r.PathPrefix}
	if first, dup := seen.matches[key]; dup {
		c.add(f.Match.line, path+".match", "the same host and path_prefix as the route at line %d", first)
	} else {
		seen.matches[key] = r.Line
	}
}

func (c *checker) route(path string, f *fileRoute, cfg *Config) Route {
	r := newRoute(f.line)
	c.require(&f.meta, path, "name", "match", "upstream")
	if f.Name.ok() && c.name(f.Name.line, path+".name", f.Name.v) {
		r.Name = f.Name.v
	}
	c.match(path+".match", f.Match, &r)
	r.Upstream = c.httpURL(path+".upstream", f.Upstream)
	f.StripPrefix.to(&r.StripPrefix)
	f.ScrubBody.to(&r.ScrubBody)
	c.protocol(path+".protocol", f.Protocol, &r)
	if r.StripPrefix && (f.Match == nil || !f.Match.has("path_prefix")) {
		c.add(f.StripPrefix.line, path+".strip_prefix", "needs match.path_prefix")
	}
	c.positive(path+".timeout", f.Timeout, &r.Timeout)
	r.Callers = c.routeCallers(path+".callers", f.keys["callers"], f.Callers, cfg)
	r.Inject = c.inject(path+".inject", f.Inject, cfg, r.Callers)
	r.UpstreamTLS = c.upstreamTLS(path+".upstream_tls", f.UpstreamTLS, cfg)
	if r.UpstreamTLS != nil && r.Upstream != nil && r.Upstream.Scheme != "https" {
		c.add(f.UpstreamTLS.line, path+".upstream_tls", "needs an https upstream")
	}
	return r
}

var routeProtocols = []string{ProtoHTTP1, ProtoH2, ProtoH2C, ProtoAuto}

// protocol reads the upstream protocol, which must suit the upstream's
// scheme: h2 and auto need TLS (https), h2c needs cleartext (http).
func (c *checker) protocol(path string, s *str, r *Route) {
	if !c.oneOf(path, s, &r.Protocol, routeProtocols) || r.Upstream == nil {
		return
	}
	switch {
	case (r.Protocol == ProtoH2 || r.Protocol == ProtoAuto) && r.Upstream.Scheme != "https":
		c.add(s.line, path, "%s needs an https upstream (h2c is HTTP/2 without TLS)", r.Protocol)
	case r.Protocol == ProtoH2C && r.Upstream.Scheme != "http":
		c.add(s.line, path, "h2c needs an http upstream (h2 is HTTP/2 over TLS)")
	}
}

// match reads a route's match: host (lower case, port dropped) and/or
// path_prefix.
func (c *checker) match(path string, f *fileMatch, r *Route) {
	if f == nil {
		return
	}
	if !f.has("host") && !f.has("path_prefix") {
		c.add(f.line, path, "needs host, path_prefix or both")
	}
	if f.Host.ok() {
		h := strings.ToLower(f.Host.v)
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		if !validHost(h) {
			c.add(f.Host.line, path+".host", "%s is not a host name", quote(f.Host.v))
		}
		r.Host = h
	}
	if f.PathPrefix.ok() && !strings.HasPrefix(f.PathPrefix.v, "/") {
		c.add(f.PathPrefix.line, path+".path_prefix", "must start with \"/\"")
	}
	f.PathPrefix.to(&r.PathPrefix)
}

func (c *checker) inject(path string, f *fileInject, cfg *Config, callers []string) *Inject {
	if f == nil {
		return nil
	}
	in := newInject()
	if c.require(&f.meta, path, "credential") && f.Credential.ok() {
		in.Credential = f.Credential.v
		if cfg.Credential(in.Credential) == nil {
			c.add(f.Credential.line, path+".credential", "no credential is named %s", quote(in.Credential))
		}
	}
	if c.oneOf(path+".as", f.As, &in.As, injectForms) {
		c.checkKeys(&f.meta, path, "as: "+in.As, injectKeys[in.As], "credential", "as", "by_caller")
	}
	in.ByCaller = c.byCaller(path+".by_caller", f.ByCaller, cfg, callers)
	c.headerName(path+".header", f.Header, &in.Header)
	c.format(path+".format", f.Format, &in.Format)
	c.nonEmpty(path+".param", f.Param, &in.Param)
	c.nonEmpty(path+".username", f.Username, &in.Username)
	c.nonEmpty(path+".region", f.Region, &in.Region)
	c.nonEmpty(path+".service", f.Service, &in.Service)
	return &in
}

func (c *checker) headerName(path string, s *str, dst *string) {
	if s.ok() && !headerNameRE.MatchString(s.v) {
		c.add(s.line, path, "%s is not a header name", quote(s.v))
		return
	}
	s.to(dst)
}

// format reads a header format: the secret replaces its one %s.
func (c *checker) format(path string, s *str, dst *string) {
	if s.ok() && (strings.Count(s.v, "%s") != 1 || strings.Count(s.v, "%") != 1) {
		c.add(s.line, path, "must contain %%s exactly once, and no other %%")
		return
	}
	s.to(dst)
}

func (c *checker) upstreamTLS(path string, f *fileUpstreamTLS, cfg *Config) *UpstreamTLS {
	if f == nil {
		return nil
	}
	t := &UpstreamTLS{CA: c.ref(path+".ca", f.CA)}
	if f.ClientCert.ok() {
		t.ClientCert = f.ClientCert.v
		if !hasCertificate(cfg, t.ClientCert) {
			c.add(f.ClientCert.line, path+".client_cert", "no certificate is named %s", quote(t.ClientCert))
		}
	}
	c.nonEmpty(path+".server_name", f.ServerName, &t.ServerName)
	return t
}

func hasCertificate(cfg *Config, name string) bool {
	for _, cert := range cfg.Certificates {
		if cert.Name == name {
			return true
		}
	}
	return false
}
