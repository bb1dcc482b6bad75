package config

import (
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// The file format: what a user writes, as decoded from YAML by decode.go.
// A pointer field is nil when its key is absent or null; a slice or map is
// nil when absent. Nothing here is checked beyond its YAML type: build
// (build.go and its neighbours) turns a fileConfig into a Config and reports
// every problem. Struct fields carry their key in the yaml tag; untagged
// fields are bookkeeping.

type fileConfig struct {
	Listen          *str                        `yaml:"listen"`
	ShutdownTimeout *dur                        `yaml:"shutdown_timeout"`
	RevokeOnExit    *flag                       `yaml:"revoke_on_exit"`
	Admin           *fileAdmin                  `yaml:"admin"`
	Log             *fileLog                    `yaml:"log"`
	Telemetry       *fileTelemetry              `yaml:"telemetry"`
	Vault           *fileVault                  `yaml:"vault"`
	Credentials     map[string]*fileCredential  `yaml:"credentials"`
	Routes          []*fileRoute                `yaml:"routes"`
	Certificates    map[string]*fileCertificate `yaml:"certificates"`
	TLS             *fileTLS                    `yaml:"tls"`
	ForwardProxy    *fileForwardProxy           `yaml:"forward_proxy"`
	Callers         map[string]*fileCaller      `yaml:"callers"`
	AllowAnonymous  *flag                       `yaml:"allow_anonymous"`
	AllowedHosts    []*str                      `yaml:"allowed_hosts"`
	AllowedOrigins  []*str                      `yaml:"allowed_origins"`
	Limits          *fileLimits                 `yaml:"limits"`
	MemoryLock      *flag                       `yaml:"memory_lock"`
}

type fileAdmin struct {
	meta
	Listen *str  `yaml:"listen"`
	Token  *str  `yaml:"token"` // a reference
	Pprof  *flag `yaml:"pprof"`
}

type fileLog struct {
	meta
	Level    *str  `yaml:"level"`
	Format   *str  `yaml:"format"`
	Requests *flag `yaml:"requests"`
}

type fileTelemetry struct {
	meta
	OTLPEndpoint *str `yaml:"otlp_endpoint"`
	ServiceName  *str `yaml:"service_name"`
}

type fileVault struct {
	meta
	Address   *str           `yaml:"address"`
	CACert    *str           `yaml:"ca_cert"`
	Namespace *str           `yaml:"namespace"`
	Auth      *fileVaultAuth `yaml:"auth"`
}

type fileVaultAuth struct {
	meta
	Method   *str `yaml:"method"`
	Mount    *str `yaml:"mount"`
	Role     *str `yaml:"role"`
	Token    *str `yaml:"token"`     // a reference
	RoleID   *str `yaml:"role_id"`   // a reference
	SecretID *str `yaml:"secret_id"` // a reference
	JWT      *str `yaml:"jwt"`       // a reference
}

type fileCredential struct {
	meta
	Source *str `yaml:"source"`

	Path      *str  `yaml:"path"`
	Field     *str  `yaml:"field"`
	Refresh   *dur  `yaml:"refresh"`
	Data      *data `yaml:"data"`
	Renew     *flag `yaml:"renew"`
	RevokeOld *flag `yaml:"revoke_old"`

	TokenURL      *str            `yaml:"token_url"`
	ClientID      *str            `yaml:"client_id"`
	ClientSecret  *str            `yaml:"client_secret"` // a reference
	Scopes        []*str          `yaml:"scopes"`
	Audience      *str            `yaml:"audience"`
	AuthStyle     *str            `yaml:"auth_style"`
	RevocationURL *str            `yaml:"revocation_url"`
	Params        map[string]*str `yaml:"params"`

	Name    *str   `yaml:"name"`
	Command []*str `yaml:"command"`
	Timeout *dur   `yaml:"timeout"`

	RefreshBefore *str `yaml:"refresh_before"`
	MaxStale      *dur `yaml:"max_stale"`
}

type fileRoute struct {
	meta
	Name        *str             `yaml:"name"`
	Match       *fileMatch       `yaml:"match"`
	Upstream    *str             `yaml:"upstream"`
	StripPrefix *flag            `yaml:"strip_prefix"`
	Inject      *fileInject      `yaml:"inject"`
	Timeout     *dur             `yaml:"timeout"`
	UpstreamTLS *fileUpstreamTLS `yaml:"upstream_tls"`
	Callers     []*str           `yaml:"callers"`
	ScrubBody   *flag            `yaml:"scrub_body"`
	Protocol    *str             `yaml:"protocol"`
}

type fileMatch struct {
	meta
	Host       *str `yaml:"host"`
	PathPrefix *str `yaml:"path_prefix"`
}

type fileInject struct {
	meta
	Credential *str `yaml:"credential"`
	As         *str `yaml:"as"`
	Header     *str `yaml:"header"`
	Format     *str `yaml:"format"`
	Param      *str `yaml:"param"`
	Username   *str `yaml:"username"`
	Region     *str `yaml:"region"`
	Service    *str `yaml:"service"`
	// ByCaller maps a caller to the credential injected for it.
	ByCaller map[string]*str `yaml:"by_caller"`
}

type fileUpstreamTLS struct {
	meta
	CA         *str `yaml:"ca"` // a reference
	ClientCert *str `yaml:"client_cert"`
	ServerName *str `yaml:"server_name"`
}

type fileCertificate struct {
	meta
	Source     *str `yaml:"source"`
	Path       *str `yaml:"path"`
	CommonName *str `yaml:"common_name"`
	TTL        *dur `yaml:"ttl"`
	Cert       *str `yaml:"cert"`
	Key        *str `yaml:"key"`
}

type fileTLS struct {
	meta
	Listen   *str      `yaml:"listen"`
	ClientCA *str      `yaml:"client_ca"` // a reference
	ACME     *fileACME `yaml:"acme"`
}

type fileACME struct {
	meta
	Domains       []*str `yaml:"domains"`
	Email         *str   `yaml:"email"`
	Directory     *str   `yaml:"directory"`
	Challenge     *str   `yaml:"challenge"`
	HTTPListen    *str   `yaml:"http_listen"`
	CARoots       *str   `yaml:"ca_roots"` // a reference
	Storage       *str   `yaml:"storage"`
	RenewInterval *dur   `yaml:"renew_interval"`
}

type fileForwardProxy struct {
	meta
	Listen         *str           `yaml:"listen"`
	CA             *fileForwardCA `yaml:"ca"`
	AllowTunnel    []*str         `yaml:"allow_tunnel"`
	AllowAddresses []*str         `yaml:"allow_addresses"`
}

type fileForwardCA struct {
	meta
	CertOut   *str `yaml:"cert_out"`
	BundleOut *str `yaml:"bundle_out"`
	Cert      *str `yaml:"cert"` // a reference
	Key       *str `yaml:"key"`  // a reference
}

type fileLimits struct {
	meta
	MaxConnections      *num `yaml:"max_connections"`
	MaxConnectionsPerIP *num `yaml:"max_connections_per_ip"`
	HeaderTimeout       *dur `yaml:"header_timeout"`
	IdleTimeout         *dur `yaml:"idle_timeout"`
}

type fileCaller struct {
	meta
	Token *str            `yaml:"token"` // a reference
	Cert  *fileCallerCert `yaml:"cert"`
	UID   *num            `yaml:"uid"`
}

type fileCallerCert struct {
	meta
	URI *str `yaml:"uri"`
	DNS *str `yaml:"dns"`
	CN  *str `yaml:"cn"`
}

// meta records where a mapping was written and which keys it holds.
type meta struct {
	line int            // the line of the key naming the mapping, or of its list item
	keys map[string]int // key -> line, for every key with a non-null value
}

func (m *meta) setMeta(line int, keys map[string]int) { m.line, m.keys = line, keys }

// has reports whether key was written with a non-null value.
func (m *meta) has(key string) bool {
	_, ok := m.keys[key]
	return ok
}

// value is one leaf of the file and its line. bad is set when the YAML
// could not be read as a T; that problem is already reported.
type value[T any] struct {
	v    T
	line int
	bad  bool
}

type (
	str  = value[string]
	dur  = value[time.Duration]
	flag = value[bool]
	num  = value[int]
	data = value[map[string]any]
)

// setNode reads n into the value and returns a problem message, or "".
func (s *value[T]) setNode(n *yaml.Node) string {
	s.line = n.Line
	msg := decodeLeaf(n, &s.v)
	s.bad = msg != ""
	return msg
}

// ok reports whether the value was written and could be read.
func (s *value[T]) ok() bool { return s != nil && !s.bad }

// to stores the value in dst when it was written and could be read.
func (s *value[T]) to(dst *T) {
	if s.ok() {
		*dst = s.v
	}
}

// decodeLeaf reads a leaf node into dst, one of the types of value.
func decodeLeaf(n *yaml.Node, dst any) string {
	if m, ok := dst.(*map[string]any); ok {
		return decodeData(n, m)
	}
	if n.Kind != yaml.ScalarNode {
		return "expected a single value, not a list or mapping"
	}
	switch p := dst.(type) {
	case *string:
		*p = n.Value
	case *bool:
		return decodeBool(n, p)
	case *time.Duration:
		return decodeDuration(n, p)
	case *int:
		return decodeInt(n, p)
	}
	return ""
}

func decodeBool(n *yaml.Node, p *bool) string {
	b, err := strconv.ParseBool(n.Value)
	if n.ShortTag() != "!!bool" || err != nil {
		return "expected true or false"
	}
	*p = b
	return ""
}

func decodeInt(n *yaml.Node, p *int) string {
	i, err := strconv.Atoi(n.Value)
	if n.ShortTag() != "!!int" || err != nil {
		return "expected a whole number"
	}
	*p = i
	return ""
}

func decodeDuration(n *yaml.Node, p *time.Duration) string {
	d, err := time.ParseDuration(n.Value)
	switch {
	case err != nil:
		return quote(n.Value) + " is not a duration (e.g. 30s, 5m, 1h)"
	case d < 0:
		return "must not be negative"
	}
	*p = d
	return ""
}

// decodeData reads free-form data (a credential's data: section).
func decodeData(n *yaml.Node, p *map[string]any) string {
	if n.Kind != yaml.MappingNode {
		return "expected a mapping"
	}
	m := map[string]any{}
	if err := n.Decode(&m); err != nil {
		return "expected a mapping of names to values"
	}
	*p = m
	return ""
}
