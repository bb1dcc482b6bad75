package config

import "time"

// Every default the file format applies, in one place. Parse starts from
// these values and overwrites what the file sets.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultShutdownTimeout = 15 * time.Second
	DefaultRevokeOnExit    = true
	DefaultAdminListen     = "127.0.0.1:9901"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "json"
	DefaultLogRequests     = true
	DefaultServiceName     = "sidekey"

	DefaultMaxConnections      = 10000
	DefaultMaxConnectionsPerIP = 256 // on a listener reachable from the network
	DefaultHeaderTimeout       = 10 * time.Second
	DefaultIdleTimeout         = 60 * time.Second

	DefaultRouteTimeout = 30 * time.Second
	DefaultPathPrefix   = "/" // when a route matches on host alone
	DefaultInjectAs     = AsBearer

	DefaultRefreshBefore  = 0.33 // of the lifetime
	DefaultMaxStale       = 0    // never past expiry
	DefaultExecTimeout    = 10 * time.Second
	DefaultExecRefresh    = 10 * time.Minute
	DefaultVaultKVRefresh = 5 * time.Minute
	DefaultAuthStyle      = "basic"

	DefaultKubernetesJWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"

	DefaultACMEChallenge = "tls-alpn-01"
	DefaultACMEStorage   = "memory"
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
)

func newConfig() *Config {
	return &Config{
		Listen:          DefaultListen,
		ShutdownTimeout: DefaultShutdownTimeout,
		RevokeOnExit:    DefaultRevokeOnExit,
		Admin:           Admin{Listen: DefaultAdminListen},
		Log:             Log{Level: DefaultLogLevel, Format: DefaultLogFormat, Requests: DefaultLogRequests},
		Telemetry:       Telemetry{ServiceName: DefaultServiceName},
		Limits: Limits{MaxConnections: DefaultMaxConnections, MaxConnectionsPerIP: -1,
			HeaderTimeout: DefaultHeaderTimeout, IdleTimeout: DefaultIdleTimeout},
	}
}

// newCredential returns the defaults of a credential of the given source.
func newCredential(name, source string, line int) Credential {
	c := Credential{
		Name:          name,
		Source:        source,
		Line:          line,
		RefreshBefore: RefreshBefore{Fraction: DefaultRefreshBefore},
		MaxStale:      DefaultMaxStale,
	}
	switch source {
	case SourceVaultKV:
		c.Refresh = DefaultVaultKVRefresh
	case SourceExec:
		c.Refresh, c.Timeout = DefaultExecRefresh, DefaultExecTimeout
	case SourceOAuth2:
		c.AuthStyle = DefaultAuthStyle
	}
	return c
}

// newVaultAuth returns the defaults of a Vault auth method: mounted at its
// own name; kubernetes reads the pod's service-account token.
func newVaultAuth(method string) VaultAuth {
	a := VaultAuth{Method: method, Mount: method}
	if method == "kubernetes" {
		a.JWT = &Ref{Kind: RefFile, Name: DefaultKubernetesJWT}
	}
	return a
}

func newRoute(line int) Route {
	return Route{Line: line, PathPrefix: DefaultPathPrefix, Timeout: DefaultRouteTimeout, Protocol: ProtoHTTP1}
}

func newInject() Inject { return Inject{As: DefaultInjectAs} }

func newACME() ACME {
	return ACME{Directory: DefaultACMEDirectory, Challenge: DefaultACMEChallenge, Storage: DefaultACMEStorage}
}
