package config

import "strings"

var (
	logLevels      = []string{"debug", "info", "warn", "error"}
	logFormats     = []string{"json", "text"}
	acmeChallenges = []string{"tls-alpn-01", "http-01"}
)

// build converts the file format to a Config, starting from the defaults
// and reporting every problem on the way. The Config is only meaningful
// when no problem was reported.
func (c *checker) build(f *fileConfig) *Config {
	cfg := newConfig()
	c.listenOrUnix("listen", f.Listen, &cfg.Listen)
	f.ShutdownTimeout.to(&cfg.ShutdownTimeout)
	f.RevokeOnExit.to(&cfg.RevokeOnExit)
	c.admin(f.Admin, &cfg.Admin)
	c.log(f.Log, &cfg.Log)
	c.telemetry(f.Telemetry, &cfg.Telemetry)
	cfg.Vault = c.vault(f.Vault)
	cfg.Credentials = c.credentials(f.Credentials)
	cfg.Certificates = c.certificates(f.Certificates)
	cfg.Callers = c.callers(f.Callers)
	f.AllowAnonymous.to(&cfg.AllowAnonymous)
	cfg.AllowedHosts = c.allowedHosts(f.AllowedHosts)
	cfg.AllowedOrigins = c.allowedOrigins(f.AllowedOrigins)
	c.limits(f.Limits, &cfg.Limits)
	cfg.Routes = c.routes(f.Routes, cfg)
	cfg.TLS = c.tls(f.TLS)
	cfg.ForwardProxy = c.forwardProxy(f.ForwardProxy, cfg)
	c.reachable(f, cfg)
	f.MemoryLock.to(&cfg.MemoryLock)
	c.claimDefaults(f, cfg)
	c.vaultNeeded(cfg)
	return cfg
}

// claimDefaults claims the default listen addresses the file left alone,
// so that a listener set to one of them is reported.
func (c *checker) claimDefaults(f *fileConfig, cfg *Config) {
	if f.Listen == nil {
		c.claim("listen", cfg.Listen, 0)
	}
	if f.Admin == nil || f.Admin.Listen == nil {
		c.claim("admin.listen", cfg.Admin.Listen, 0)
	}
}

// vaultNeeded reports what needs Vault when there is no vault section.
func (c *checker) vaultNeeded(cfg *Config) {
	if cfg.Vault != nil {
		return
	}
	for _, u := range c.vaultUses {
		c.add(u.line, u.path, "%s needs a vault section", u.why)
	}
}

func (c *checker) admin(f *fileAdmin, dst *Admin) {
	if f == nil {
		return
	}
	c.listen("admin.listen", f.Listen, &dst.Listen)
	dst.Token = c.ref("admin.token", f.Token)
	f.Pprof.to(&dst.Pprof)
	if dst.Pprof && f.Token == nil {
		c.add(f.Pprof.line, "admin.pprof", "needs admin.token: profiles are served only to requests with it")
	}
}

func (c *checker) log(f *fileLog, dst *Log) {
	if f == nil {
		return
	}
	c.oneOf("log.level", f.Level, &dst.Level, logLevels)
	c.oneOf("log.format", f.Format, &dst.Format, logFormats)
	f.Requests.to(&dst.Requests)
}

func (c *checker) limits(f *fileLimits, dst *Limits) {
	if f == nil {
		return
	}
	c.count("limits.max_connections", f.MaxConnections, &dst.MaxConnections, 1)
	c.count("limits.max_connections_per_ip", f.MaxConnectionsPerIP, &dst.MaxConnectionsPerIP, 0)
	c.positive("limits.header_timeout", f.HeaderTimeout, &dst.HeaderTimeout)
	c.positive("limits.idle_timeout", f.IdleTimeout, &dst.IdleTimeout)
}

// count stores a whole number of at least least in dst.
func (c *checker) count(path string, n *num, dst *int, least int) {
	if !n.ok() {
		return
	}
	if n.v < least {
		c.add(n.line, path, "must be at least %d", least)
		return
	}
	*dst = n.v
}

func (c *checker) telemetry(f *fileTelemetry, dst *Telemetry) {
	if f == nil {
		return
	}
	f.OTLPEndpoint.to(&dst.OTLPEndpoint)
	c.nonEmpty("telemetry.service_name", f.ServiceName, &dst.ServiceName)
}

func (c *checker) tls(f *fileTLS) *TLS {
	if f == nil {
		return nil
	}
	t := &TLS{}
	c.require(&f.meta, "tls", "listen", "acme")
	c.listen("tls.listen", f.Listen, &t.Listen)
	t.ClientCA = c.ref("tls.client_ca", f.ClientCA)
	t.ACME = c.acme(f.ACME)
	return t
}

func (c *checker) acme(f *fileACME) *ACME {
	if f == nil {
		return nil
	}
	a := newACME()
	c.require(&f.meta, "tls.acme", "domains")
	a.Domains = c.acmeDomains(f)
	c.email("tls.acme.email", f.Email, &a.Email)
	if c.httpURL("tls.acme.directory", f.Directory) != nil {
		a.Directory = f.Directory.v
	}
	c.challenge(f, &a)
	a.CARoots = c.ref("tls.acme.ca_roots", f.CARoots)
	c.storage(f.Storage, &a.Storage)
	c.positive("tls.acme.renew_interval", f.RenewInterval, &a.RenewInterval)
	return &a
}

func (c *checker) acmeDomains(f *fileACME) []string {
	if f.Domains != nil && len(f.Domains) == 0 {
		c.add(f.keys["domains"], "tls.acme.domains", "must not be empty")
	}
	return c.hosts("tls.acme.domains", f.Domains)
}

func (c *checker) email(path string, s *str, dst *string) {
	if !s.ok() {
		return
	}
	if strings.Count(s.v, "@") != 1 || strings.ContainsAny(s.v, " \t") {
		c.add(s.line, path, "%s is not an email address", quote(s.v))
		return
	}
	*dst = s.v
}

// challenge reads the challenge type and its http_listen, which http-01
// needs and nothing else uses.
func (c *checker) challenge(f *fileACME, a *ACME) {
	if !c.oneOf("tls.acme.challenge", f.Challenge, &a.Challenge, acmeChallenges) {
		return
	}
	switch {
	case a.Challenge == "http-01" && !f.has("http_listen"):
		c.add(f.line, "tls.acme", "http_listen is required for challenge http-01")
	case a.Challenge != "http-01" && f.has("http_listen"):
		c.add(f.keys["http_listen"], "tls.acme", "http_listen is only used by challenge http-01")
	default:
		c.listen("tls.acme.http_listen", f.HTTPListen, &a.HTTPListen)
	}
}

// storage reads where ACME keeps its state: "memory" or "vault:PATH".
func (c *checker) storage(s *str, dst *string) {
	if !s.ok() {
		return
	}
	path, isVault := strings.CutPrefix(s.v, "vault:")
	switch {
	case s.v == "memory":
	case isVault && strings.TrimSpace(path) != "":
		c.needVault(s.line, "tls.acme.storage", "storage vault:")
	default:
		c.add(s.line, "tls.acme.storage", "must be memory or vault:PATH")
		return
	}
	*dst = s.v
}
