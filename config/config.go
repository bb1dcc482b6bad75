package config

import (
	"net/netip"
	"net/url"
	"slices"
	"time"
)

// Config is the validated runtime configuration. It is plain data: no
// atomics, servers or callbacks. It is built once by Load or Parse from the
// file format (file.go) and never mutated afterwards.
type Config struct {
	// File is the path the configuration was read from ("-" for stdin).
	File string

	Listen          string
	ShutdownTimeout time.Duration
	RevokeOnExit    bool

	Admin     Admin
	Log       Log
	Telemetry Telemetry

	// Vault is nil when the file has no vault section.
	Vault *Vault

	// Credentials are sorted by name.
	Credentials []Credential
	// Routes keep the order of the file.
	Routes []Route
	// Certificates are sorted by name.
	Certificates []Certificate

	// TLS is nil when inbound TLS is off.
	TLS *TLS
	// ForwardProxy is nil when the forward-proxy mode is off.
	ForwardProxy *ForwardProxy

	// Callers are who may use the credentials, sorted by name; empty
	// admits anonymous requests (on loopback, or with AllowAnonymous).
	Callers []Caller
	// AllowAnonymous admits requests that name no caller, also on a
	// listener reachable from the network.
	AllowAnonymous bool
	// AllowedHosts are Host values accepted besides loopback names, the
	// listener's own address, route hosts and ACME domains: exact host
	// names (lower case, no port) or "*.suffix" patterns.
	AllowedHosts []string
	// Limits bound what each listener's connections may cost.
	Limits Limits
	// AllowedOrigins are browser origins admitted ("https://app.example.com",
	// lower case, default port left out).
	AllowedOrigins []string
	// MemoryLock locks all of the process's memory (mlockall) at start-up,
	// so that no secret reaches swap. A change needs a restart.
	MemoryLock bool
}

// Admin is the admin API listener.
type Admin struct {
	Listen string
	// Token, when set, is required as a bearer token on POST calls.
	Token *Ref
	// Pprof serves Go's profiles at /debug/pprof/ on the admin listener,
	// to requests with the admin token (which it therefore requires).
	Pprof bool
}

// Log configures the process logger.
type Log struct {
	Level    string // debug | info | warn | error
	Format   string // json | text
	Requests bool   // one audit line per proxied request
}

// Telemetry configures OpenTelemetry export.
type Telemetry struct {
	OTLPEndpoint string
	ServiceName  string
}

// Vault is the Vault client configuration. Empty fields fall back to the
// usual VAULT_* environment variables where the client resolves them.
type Vault struct {
	Address   string
	CACert    string
	Namespace string
	Auth      VaultAuth
}

// VaultAuth selects and configures a Vault auth method.
type VaultAuth struct {
	Method   string // token | approle | kubernetes
	Mount    string // auth mount path; defaults to the method name
	Role     string // kubernetes
	Token    *Ref   // token
	RoleID   *Ref   // approle
	SecretID *Ref   // approle
	JWT      *Ref   // kubernetes service-account token; default file:/var/run/secrets/kubernetes.io/serviceaccount/token
}

// Source names for credentials.
const (
	SourceVaultKV    = "vault-kv"
	SourceVaultLease = "vault-lease"
	SourceOAuth2     = "oauth2"
	SourceFile       = "file"
	SourceEnv        = "env"
	SourceExec       = "exec"
)

// Credential is one upstream credential and where it comes from. Only the
// fields of its Source are set.
type Credential struct {
	Name   string
	Source string
	Line   int // line of the credential's key in the file, for messages

	// vault-kv, vault-lease, file
	Path string
	// vault-kv: the field of the KV secret holding the value.
	Field string
	// vault-kv, exec: how often the value is re-read.
	Refresh time.Duration

	// vault-lease
	Data  map[string]any // non-nil: write instead of read
	Renew bool
	// RevokeOld revokes superseded values once drained: revoke_old for
	// vault-lease, implied by revocation_url for oauth2.
	RevokeOld bool

	// oauth2
	TokenURL      string
	ClientID      string
	ClientSecret  *Ref
	Scopes        []string
	Audience      string
	AuthStyle     string // basic | post
	RevocationURL string
	Params        map[string]string // extra token-request parameters

	// env: the variable name.
	EnvName string

	// exec
	Command []string
	Timeout time.Duration

	// every source
	RefreshBefore RefreshBefore
	MaxStale      time.Duration
}

// RefreshBefore says when to refresh ahead of expiry: when Fraction of the
// lifetime is left, or, when Duration is non-zero, when Duration is left.
type RefreshBefore struct {
	Fraction float64
	Duration time.Duration
}

// Injection forms.
const (
	AsBearer = "bearer"
	AsHeader = "header"
	AsBasic  = "basic"
	AsQuery  = "query"
	AsSigV4  = "aws-sigv4"
)

// Route maps matching requests to an upstream and says what to inject.
type Route struct {
	Name string
	Line int

	// Match: Host (port ignored, lower case) and/or PathPrefix ("/" when unset).
	Host       string
	PathPrefix string

	Upstream    *url.URL
	StripPrefix bool
	Inject      *Inject // nil: nothing injected
	Timeout     time.Duration
	UpstreamTLS *UpstreamTLS
	// Callers, when set, are the only callers admitted to the route.
	Callers []string
	// ScrubBody masks live secret values in text response bodies too
	// (response headers are always scrubbed).
	ScrubBody bool
	// Protocol is how the route talks to its upstream: ProtoHTTP1 (the
	// default), ProtoH2, ProtoH2C or ProtoAuto.
	Protocol string
}

// Upstream protocols of a route.
const (
	ProtoHTTP1 = "http1" // HTTP/1.1
	ProtoH2    = "h2"    // HTTP/2 over TLS
	ProtoH2C   = "h2c"   // HTTP/2 over cleartext, with prior knowledge
	ProtoAuto  = "auto"  // HTTP/2 when the upstream's ALPN offers it, else HTTP/1.1
)

// Inject says which credential a route injects and in which form.
type Inject struct {
	Credential string
	As         string
	Header     string // header: the header name
	Format     string // header: e.g. "token %s"; empty means the bare value
	Param      string // query: the parameter name
	Username   string // basic: the user name (else the secret's "username" field)
	Region     string // aws-sigv4
	Service    string // aws-sigv4
	// ByCaller maps a caller's name to the credential injected for its
	// requests instead of Credential, in the same form.
	ByCaller map[string]string
}

// UpstreamTLS configures TLS towards a route's upstream.
type UpstreamTLS struct {
	CA         *Ref   // pinned CA bundle
	ClientCert string // a certificate name from Certificates
	ServerName string
	// InsecureSkipVerify is deliberately absent: verification is always on.
}

// Certificate is an outbound client certificate.
type Certificate struct {
	Name       string
	Line       int
	Source     string // vault-pki | file
	Path       string
	CommonName string
	TTL        time.Duration
	CertFile   string // file
	KeyFile    string // file
}

// TLS is the inbound TLS listener.
type TLS struct {
	Listen string
	// ClientCA, when set, verifies client certificates (callers by cert).
	ClientCA *Ref
	ACME     *ACME
}

// ACME configures certificate issuance for the inbound listener.
type ACME struct {
	Domains       []string
	Email         string
	Directory     string
	Challenge     string // tls-alpn-01 | http-01
	HTTPListen    string
	CARoots       *Ref
	Storage       string        // "memory" or "vault:PATH"
	RenewInterval time.Duration // how often to check for renewals; 0: 10m
}

// ForwardProxy configures the HTTPS_PROXY / HTTP_PROXY mode. The hosts it
// intercepts are the route hosts (RouteHosts); other destinations are
// refused unless AllowTunnel lists them.
type ForwardProxy struct {
	Listen string
	Line   int // line of the forward_proxy key, for messages
	CA     ForwardCA
	// AllowTunnel are the CONNECT destinations passed through untouched:
	// "name", "*.name" (every name below it), an IP literal, each with an
	// optional ":port" (443 when absent). Lower case, as written otherwise.
	AllowTunnel []string
	// AllowAddresses are the address ranges a destination may resolve into
	// although they are loopback, private, link-local, CGNAT or the like.
	// Masked; an IPv4-mapped range is given as its IPv4 range.
	AllowAddresses []netip.Prefix
}

// ForwardCA is the forward-proxy CA: generated in memory at start-up, or
// a CA of one's own when Cert and Key are set (both or neither).
type ForwardCA struct {
	// CertOut receives the CA certificate, BundleOut the system's roots
	// followed by it; "" writes nothing there. Never a key.
	CertOut   string
	BundleOut string
	Cert      *Ref
	Key       *Ref
}

// Generated reports whether the CA is generated in memory rather than
// loaded from Cert and Key.
func (ca ForwardCA) Generated() bool { return ca.Cert == nil && ca.Key == nil }

// RouteHosts lists the distinct route hosts (match.host), sorted: the
// hosts the forward proxy intercepts.
func (c *Config) RouteHosts() []string {
	var out []string
	for _, r := range c.Routes {
		if r.Host != "" && !slices.Contains(out, r.Host) {
			out = append(out, r.Host)
		}
	}
	slices.Sort(out)
	return out
}

// Limits bound each listener's connections (SPEC limits).
type Limits struct {
	MaxConnections int // per listener
	// MaxConnectionsPerIP: 0 none; -1 (unset) DefaultMaxConnectionsPerIP on a
	// listener reachable from the network, none on the others.
	MaxConnectionsPerIP int
	HeaderTimeout       time.Duration // a connection's first request's headers
	IdleTimeout         time.Duration // a keep-alive connection without a request
}

// Caller kinds: how a caller proves who it is.
const (
	CallerToken = "token"
	CallerCert  = "cert"
	CallerUID   = "uid"
)

// Caller is one identity that may use sidekey's credentials. Exactly one of
// Token, Cert and UID is set.
type Caller struct {
	Name string
	Line int
	// Token is the caller token, a secret that follows its source.
	Token *Ref
	// Cert matches a verified client certificate on the TLS listener.
	Cert *CertMatch
	// UID matches the peer's user ID on a unix-socket listener; -1 unset.
	UID int
}

// Kind is CallerToken, CallerCert or CallerUID.
func (c Caller) Kind() string {
	switch {
	case c.Token != nil:
		return CallerToken
	case c.Cert != nil:
		return CallerCert
	}
	return CallerUID
}

// CertMatch names a client certificate by one of its names: a URI SAN (a
// SPIFFE ID), a DNS SAN or the subject's common name.
type CertMatch struct {
	URI string
	DNS string
	CN  string
}

// CallerCredentialPrefix starts the name of the credential that holds a
// caller's token (see CallerCredential). No configured credential name
// can contain its ':'.
const CallerCredentialPrefix = "caller:"

// CallerCredential is the credential that holds a token caller's token,
// named CallerCredentialPrefix + the caller's name, so that it is fetched,
// followed and redacted like every other credential.
func (c Caller) CallerCredential() Credential {
	cr := newCredential(CallerCredentialPrefix+c.Name, "", c.Line)
	switch c.Token.Kind {
	case RefEnv:
		cr.Source, cr.EnvName = SourceEnv, c.Token.Name
	case RefFile:
		cr.Source, cr.Path = SourceFile, c.Token.Name
	case RefVault:
		cr.Source, cr.Path, cr.Field, cr.Refresh = SourceVaultKV, c.Token.Name, c.Token.Field, DefaultVaultKVRefresh
	}
	return cr
}

// CallerCredentials lists the credentials of the token callers.
func (c *Config) CallerCredentials() []Credential {
	var out []Credential
	for _, cl := range c.Callers {
		if cl.Token != nil {
			out = append(out, cl.CallerCredential())
		}
	}
	return out
}

// UnixPrefix starts a listen address that is a unix socket path.
const UnixPrefix = "unix:"

// RefKind is the kind of a secret reference.
type RefKind string

// Secret reference kinds.
const (
	RefEnv   RefKind = "env"
	RefFile  RefKind = "file"
	RefVault RefKind = "vault"
)

// Ref is a reference to a secret held elsewhere: env:NAME, file:PATH or
// vault:PATH#FIELD. Config never holds a literal secret.
type Ref struct {
	Kind  RefKind
	Name  string // env: variable; file: path; vault: path
	Field string // vault only
}

// String renders the reference as written in the file. It holds no secret.
func (r Ref) String() string {
	if r.Kind == RefVault {
		return string(r.Kind) + ":" + r.Name + "#" + r.Field
	}
	return string(r.Kind) + ":" + r.Name
}

// Credential returns the credential with the given name, or nil.
func (c *Config) Credential(name string) *Credential {
	for i := range c.Credentials {
		if c.Credentials[i].Name == name {
			return &c.Credentials[i]
		}
	}
	return nil
}
