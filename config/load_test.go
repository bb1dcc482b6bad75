package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// TestLoadSpecSample parses the sample configuration of SPEC.md.
func TestLoadSpecSample(t *testing.T) {
	cfg, err := Load("testdata/spec.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"file", cfg.File, "testdata/spec.yaml"},
		{"listen", cfg.Listen, "127.0.0.1:8080"},
		{"shutdown", cfg.ShutdownTimeout, 15 * time.Second},
		{"revoke", cfg.RevokeOnExit, true},
		{"admin", cfg.Admin.Listen, "127.0.0.1:9901"},
		{"admin token", *cfg.Admin.Token, Ref{Kind: RefEnv, Name: "SIDEKEY_ADMIN_TOKEN"}},
		{"log", cfg.Log, Log{Level: "info", Format: "json", Requests: true}},
		{"telemetry", cfg.Telemetry, Telemetry{ServiceName: "sidekey"}},
		{"vault address", cfg.Vault.Address, "https://vault.internal:8200"},
		{"vault auth", cfg.Vault.Auth, VaultAuth{Method: "kubernetes", Mount: "kubernetes", Role: "payments",
			JWT: &Ref{Kind: RefFile, Name: DefaultKubernetesJWT}}},
		{"credential names", credentialNames(cfg), []string{"ci-token", "github", "helper", "laptop-token", "partner-api", "payments-db"}},
		{"github", *cfg.Credential("github"), Credential{Name: "github", Source: SourceVaultKV, Line: 26,
			Path: "secret/data/github", Field: "token", Refresh: 5 * time.Minute, RefreshBefore: RefreshBefore{Fraction: 0.33}}},
		{"payments-db", *cfg.Credential("payments-db"), Credential{Name: "payments-db", Source: SourceVaultLease, Line: 31,
			Path: "aws/creds/payments", Renew: true, RevokeOld: true, RefreshBefore: RefreshBefore{Fraction: 0.33}}},
		{"partner-api", *cfg.Credential("partner-api"), Credential{Name: "partner-api", Source: SourceOAuth2, Line: 37,
			TokenURL: "https://auth.partner.example/oauth/token", ClientID: "sidekey-payments",
			ClientSecret: &Ref{Kind: RefVault, Name: "secret/data/partner", Field: "client_secret"},
			Scopes:       []string{"payments.read"}, AuthStyle: "basic", RefreshBefore: RefreshBefore{Fraction: 0.33}}},
		{"laptop-token", *cfg.Credential("laptop-token"), Credential{Name: "laptop-token", Source: SourceFile, Line: 46,
			Path: "/var/run/secrets/tokens/api", RefreshBefore: RefreshBefore{Fraction: 0.33}}},
		{"ci-token", *cfg.Credential("ci-token"), Credential{Name: "ci-token", Source: SourceEnv, Line: 50,
			EnvName: "UPSTREAM_TOKEN", RefreshBefore: RefreshBefore{Fraction: 0.33}}},
		{"helper", *cfg.Credential("helper"), Credential{Name: "helper", Source: SourceExec, Line: 53,
			Command: []string{"gh", "auth", "token"}, Refresh: 10 * time.Minute, Timeout: 10 * time.Second,
			RefreshBefore: RefreshBefore{Fraction: 0.33}}},
		{"routes", len(cfg.Routes), 1},
		{"route", routeSummary(cfg.Routes[0]), "github 63 /github/ https://api.github.com true 30s"},
		{"inject", *cfg.Routes[0].Inject, Inject{Credential: "github", As: AsBearer}},
		{"upstream tls", *cfg.Routes[0].UpstreamTLS, UpstreamTLS{CA: &Ref{Kind: RefFile, Name: "/etc/ssl/partner-ca.pem"},
			ClientCert: "payments-mtls"}},
		{"certificates", cfg.Certificates, []Certificate{{Name: "payments-mtls", Line: 86, Source: "vault-pki",
			Path: "pki/issue/payments", CommonName: "payments.sidecar", TTL: time.Hour}}},
		{"tls listen", cfg.TLS.Listen, ":8443"},
		{"acme", *cfg.TLS.ACME, ACME{Domains: []string{"api-gw.example.com"}, Email: "ops@example.com",
			Directory: DefaultACMEDirectory, Challenge: "tls-alpn-01", Storage: "memory"}},
		{"forward proxy", *cfg.ForwardProxy, ForwardProxy{Listen: "127.0.0.1:3128", Line: 104,
			CA:          ForwardCA{CertOut: "/run/sidekey/ca.pem", BundleOut: "/run/sidekey/ca-bundle.pem"},
			AllowTunnel: []string{"*.amazonaws.com"}}},
		{"callers", callerSummary(cfg.Callers), []string{"ci-runner token", "laptop-user uid", "payments-app cert"}},
		{"warnings", len(cfg.Warnings()), 3}, // the cert and uid callers: no client_ca, no unix listen; no route host to intercept
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %+v, want %+v", c.name, c.got, c.want)
		}
	}
}

func callerSummary(cs []Caller) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name+" "+c.Kind())
	}
	return out
}

func credentialNames(cfg *Config) []string {
	var names []string
	for _, c := range cfg.Credentials {
		names = append(names, c.Name)
	}
	return names
}

func routeSummary(r Route) string {
	return strings.Join([]string{r.Name, strconv.Itoa(r.Line), r.Host + r.PathPrefix, r.Upstream.String(),
		strconv.FormatBool(r.StripPrefix), r.Timeout.String()}, " ")
}

func TestParseAppliesDefaults(t *testing.T) {
	cfg := mustParse(t, `vault:
  auth: {method: approle, role_id: file:/etc/role-id, secret_id: env:SECRET_ID}
credentials:
  kv: {source: vault-kv, path: secret/data/x, field: token}
  run: {source: exec, command: [print-token]}
  oa: {source: oauth2, token_url: "https://a.example/token", client_id: me, client_secret: "env:CLIENT_SECRET"}
routes:
  - name: by-host
    match: {host: API.Example:8443}
    upstream: https://api.example
    inject: {credential: kv}
tls:
  listen: 127.0.0.1:8443
  acme: {domains: [gw.example]}
`)
	want := Config{
		File: "test.yaml", Listen: DefaultListen, ShutdownTimeout: 15 * time.Second, RevokeOnExit: true,
		Admin:     Admin{Listen: "127.0.0.1:9901"},
		Log:       Log{Level: "info", Format: "json", Requests: true},
		Telemetry: Telemetry{ServiceName: "sidekey"},
		Vault: &Vault{Auth: VaultAuth{Method: "approle", Mount: "approle",
			RoleID: &Ref{Kind: RefFile, Name: "/etc/role-id"}, SecretID: &Ref{Kind: RefEnv, Name: "SECRET_ID"}}},
		Credentials: []Credential{
			{Name: "kv", Source: SourceVaultKV, Line: 4, Path: "secret/data/x", Field: "token",
				Refresh: 5 * time.Minute, RefreshBefore: RefreshBefore{Fraction: 0.33}},
			{Name: "oa", Source: SourceOAuth2, Line: 6, TokenURL: "https://a.example/token", ClientID: "me",
				ClientSecret: &Ref{Kind: RefEnv, Name: "CLIENT_SECRET"}, AuthStyle: "basic", RefreshBefore: RefreshBefore{Fraction: 0.33}},
			{Name: "run", Source: SourceExec, Line: 5, Command: []string{"print-token"},
				Refresh: 10 * time.Minute, Timeout: 10 * time.Second, RefreshBefore: RefreshBefore{Fraction: 0.33}},
		},
		Certificates: []Certificate{},
		Callers:      []Caller{},
		Limits:       Limits{MaxConnections: 10000, MaxConnectionsPerIP: -1, HeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute},
		TLS: &TLS{Listen: "127.0.0.1:8443", ACME: &ACME{Domains: []string{"gw.example"},
			Directory: "https://acme-v02.api.letsencrypt.org/directory", Challenge: "tls-alpn-01", Storage: "memory"}},
	}
	route := cfg.Routes[0]
	cfg.Routes = nil
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("config:\n%+v\nwant:\n%+v", *cfg, want)
	}
	if route.Host != "api.example" || route.PathPrefix != "/" || route.Timeout != 30*time.Second ||
		route.Inject.As != AsBearer || route.Upstream.String() != "https://api.example" {
		t.Errorf("route = %+v, want host api.example, prefix /, timeout 30s, bearer", route)
	}
}

func TestParseOverridesDefaults(t *testing.T) {
	cfg := mustParse(t, `listen: 0.0.0.0:9000
allow_anonymous: true
shutdown_timeout: 1m
revoke_on_exit: false
log: {level: debug, format: text, requests: false}
credentials:
  a: {source: env, name: A, refresh_before: 2m, max_stale: 30s}
  b: {source: env, name: B, refresh_before: 50%}
  x: {source: exec, command: [t], timeout: 2s, refresh: 1m}
`)
	if cfg.Listen != "0.0.0.0:9000" || cfg.ShutdownTimeout != time.Minute || cfg.RevokeOnExit ||
		cfg.Log != (Log{Level: "debug", Format: "text"}) {
		t.Errorf("top level = %+v", cfg)
	}
	a, b, x := cfg.Credential("a"), cfg.Credential("b"), cfg.Credential("x")
	if a.RefreshBefore != (RefreshBefore{Duration: 2 * time.Minute}) || a.MaxStale != 30*time.Second {
		t.Errorf("a = %+v", a)
	}
	if b.RefreshBefore != (RefreshBefore{Fraction: 0.5}) {
		t.Errorf("b = %+v", b)
	}
	if x.Timeout != 2*time.Second || x.Refresh != time.Minute {
		t.Errorf("x = %+v", x)
	}
}

func TestParseEmptyFileIsDefaults(t *testing.T) {
	for _, src := range []string{"", "# nothing yet\n", "---\n"} {
		cfg := mustParse(t, src)
		if cfg.Listen != DefaultListen || len(cfg.Routes) != 0 || cfg.Vault != nil {
			t.Errorf("Parse(%q) = %+v", src, cfg)
		}
	}
}

func TestParseFollowsAnchorsAndMergeKeys(t *testing.T) {
	cfg := mustParse(t, `credentials:
  tok: {source: env, name: TOKEN}
routes:
  - &a
    name: a
    match: {path_prefix: /a/}
    upstream: https://api.example
    timeout: 5s
    inject: {credential: tok}
  - <<: *a
    name: b
    match: {path_prefix: /b/}
    timeout: 9s
`)
	a, b := cfg.Routes[0], cfg.Routes[1]
	if a.Name != "a" || a.Timeout != 5*time.Second || b.Name != "b" || b.Timeout != 9*time.Second ||
		b.Upstream.String() != "https://api.example" || b.Inject.Credential != "tok" || b.PathPrefix != "/b/" {
		t.Errorf("routes = %+v, %+v", a, b)
	}
}

func TestLoadReadsStdin(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("listen: 127.0.0.1:9999\nlisen: x\n")
	f.Seek(0, 0)
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()
	_, err = Load("-")
	if want := StdinName + `:2: unknown key "lisen"`; err == nil || err.Error() != want {
		t.Errorf("Load(-) error = %v, want %s", err, want)
	}
	f.Seek(0, 0)
	f.Truncate(0)
	f.WriteString("listen: 127.0.0.1:9999\n")
	f.Seek(0, 0)
	cfg, err := Load("-")
	if err != nil || cfg.File != "-" || cfg.Listen != "127.0.0.1:9999" {
		t.Errorf("Load(-) = %+v, %v; want File - and listen 127.0.0.1:9999", cfg, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load = %v, want a not-exist error", err)
	}
	if Problems(err) != nil {
		t.Errorf("Problems of a read error = %v, want none", Problems(err))
	}
}

func TestLoadEveryKey(t *testing.T) {
	cfg, err := Load("testdata/every-key.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	in := cfg.Routes[1].Inject
	if cfg.Vault.Auth.Mount != "approle-sidekey" || cfg.Credential("partner").Params["resource"] != "https://api.partner.example" ||
		cfg.Credential("lease").Data["common_name"] != "payments.sidecar" || in.Format != "token %s" || in.Header != "X-API-Key" ||
		cfg.Certificates[0].CertFile != "/etc/sidekey/client.pem" || cfg.TLS.ACME.HTTPListen != ":18081" ||
		cfg.Routes[1].Host != "api.keyed.example" || cfg.ForwardProxy.AllowTunnel[1] != "files.pythonhosted.org" {
		t.Errorf("config = %+v", cfg)
	}
	wantFwd := ForwardProxy{Listen: "127.0.0.1:13128", Line: cfg.ForwardProxy.Line, // its line moves as keys are added above it
		CA: ForwardCA{CertOut: "/run/sidekey/ca.pem", BundleOut: "/run/sidekey/ca-bundle.pem",
			Cert: &Ref{Kind: RefFile, Name: "/etc/sidekey/forward-ca.pem"}, Key: &Ref{Kind: RefFile, Name: "/etc/sidekey/forward-ca.key"}},
		AllowTunnel: []string{"pypi.org", "files.pythonhosted.org", "*.amazonaws.com", "git.internal:22", "[2001:db8::1]:8443"},
		AllowAddresses: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("192.168.1.0/24"),
			netip.MustParsePrefix("127.0.0.1/32")}}
	if !reflect.DeepEqual(*cfg.ForwardProxy, wantFwd) {
		t.Errorf("forward_proxy = %+v, want %+v", *cfg.ForwardProxy, wantFwd)
	}
	wantCallers := []Caller{
		{Name: "ci-runner", Token: &Ref{Kind: RefFile, Name: "/run/sidekey/ci-token"}, UID: -1},
		{Name: "laptop", UID: 1000},
		{Name: "payments", Cert: &CertMatch{URI: "spiffe://cluster.local/ns/payments/sa/app"}, UID: -1},
	}
	gotCallers := slices.Clone(cfg.Callers)
	for i := range gotCallers {
		gotCallers[i].Line = 0 // where they stand moves as keys are added above them
	}
	if !reflect.DeepEqual(gotCallers, wantCallers) || !cfg.AllowAnonymous ||
		!reflect.DeepEqual(cfg.AllowedHosts, []string{"gw.internal", "*.svc.cluster.local"}) ||
		!reflect.DeepEqual(cfg.AllowedOrigins, []string{"https://app.example.com", "http://localhost:3000"}) ||
		!reflect.DeepEqual(cfg.Routes[0].Callers, []string{"ci-runner", "payments"}) || !cfg.Routes[0].ScrubBody || !cfg.MemoryLock ||
		cfg.Routes[len(cfg.Routes)-1].Protocol != ProtoAuto || cfg.Routes[0].Protocol != ProtoHTTP1 ||
		cfg.Limits != (Limits{MaxConnections: 500, MaxConnectionsPerIP: 0, HeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second}) ||
		!reflect.DeepEqual(cfg.Routes[0].Inject.ByCaller, map[string]string{"ci-runner": "ci"}) ||
		*cfg.TLS.ClientCA != (Ref{Kind: RefFile, Name: "/etc/sidekey/clients-ca.pem"}) {
		t.Errorf("callers = %+v, anonymous %v, hosts %q, origins %q, route callers %q, by_caller %v, client_ca %v",
			cfg.Callers, cfg.AllowAnonymous, cfg.AllowedHosts, cfg.AllowedOrigins, cfg.Routes[0].Callers,
			cfg.Routes[0].Inject.ByCaller, cfg.TLS.ClientCA)
	}
}
