package config

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// routePrelude is a valid start for route cases: lines 1-6; a case's own
// lines start at line 7.
const routePrelude = `credentials:
  tok: {source: env, name: TOKEN}
routes:
  - name: r
    match: {path_prefix: /r/}
    upstream: https://up.example
`

// problemLines parses src as "bad.yaml" and returns its problems, one
// "FILE:LINE: message" string each.
func problemLines(t *testing.T, src string) []string {
	t.Helper()
	cfg, err := Parse("bad.yaml", []byte(src))
	if err == nil {
		t.Fatalf("Parse accepted the file: %+v", cfg)
	}
	if cfg != nil {
		t.Errorf("Parse returned a Config with its error")
	}
	return strings.Split(err.Error(), "\n")
}

func TestParseReportsProblemAtItsLine(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		// The file as a whole.
		{"syntax error", "listen: 127.0.0.1:8080\nlog:\n  level: info\n  format: a: b\n", []string{
			"bad.yaml:4: invalid YAML: mapping values are not allowed in this context"}},
		{"tab indent", "log:\n\tlevel: info\n", []string{
			"bad.yaml:2: invalid YAML: found character that cannot start any token"}},
		{"two documents", "listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n", []string{
			"bad.yaml:2: only one YAML document is allowed"}},
		{"not a mapping", "- a\n- b\n", []string{
			"bad.yaml:1: expected a mapping"}},
		{"unknown top-level key", "listen: 127.0.0.1:8080\nlisen: :80\n", []string{
			`bad.yaml:2: unknown key "lisen"`}},
		{"duplicate key", "log:\n  level: info\n  level: debug\n", []string{
			`bad.yaml:3: log: duplicate key "level" (first at line 2)`}},

		// Types.
		{"duration", "listen: 127.0.0.1:8080\nshutdown_timeout: 15\n", []string{
			`bad.yaml:2: shutdown_timeout: "15" is not a duration (e.g. 30s, 5m, 1h)`}},
		{"negative duration", "shutdown_timeout: -1s\n", []string{
			"bad.yaml:1: shutdown_timeout: must not be negative"}},
		{"bool", "log:\n  requests: yes\n", []string{
			"bad.yaml:2: log.requests: expected true or false"}},
		{"list for a string", "listen: [a, b]\n", []string{
			"bad.yaml:1: listen: expected a single value, not a list or mapping"}},
		{"string for a list", "credentials:\n  o:\n    source: oauth2\n    token_url: https://a.example/t\n" +
			"    client_id: me\n    client_secret: env:S\n    scopes: read\n", []string{
			"bad.yaml:7: credentials.o.scopes: expected a list"}},
		{"string for a mapping", "admin: on\n", []string{
			"bad.yaml:1: admin: expected a mapping"}},

		// Listen addresses.
		{"listen without port", "listen: localhost\n", []string{
			`bad.yaml:1: listen: "localhost" is not a listen address: want host:port, e.g. 127.0.0.1:8080 or :8443`}},
		{"listen bad port", "admin:\n  listen: 127.0.0.1:http99\n", []string{
			`bad.yaml:2: admin.listen: "127.0.0.1:http99" is not a listen address: the port must be a number from 0 to 65535`}},
		{"listeners clash", "listen: 127.0.0.1:9000\nadmin:\n  listen: 127.0.0.1:9000\n", []string{
			"bad.yaml:3: admin.listen: listens on the same address as listen"}},
		{"listener clashes with a default", "admin:\n  listen: 127.0.0.1:8080\n", []string{
			"bad.yaml:2: admin.listen: listens on the same address as listen"}},

		// Log.
		{"log level", "log:\n  level: verbose\n  format: xml\n", []string{
			`bad.yaml:2: log.level: "verbose" is not one of debug, info, warn, error`,
			`bad.yaml:3: log.format: "xml" is not one of json, text`}},

		// Credentials.
		{"source missing", "credentials:\n  ci:\n    name: TOKEN\n", []string{
			"bad.yaml:2: credentials.ci: source is required"}},
		{"source unknown", "credentials:\n  ci:\n    source: carrier-pigeon\n", []string{
			`bad.yaml:3: credentials.ci.source: "carrier-pigeon" is not one of vault-kv, vault-lease, oauth2, file, env, exec`}},
		{"field of another source", "credentials:\n  ci:\n    source: env\n    name: TOKEN\n    path: /run/token\n", []string{
			"bad.yaml:5: credentials.ci: path is not used by source env"}},
		{"credential without value", "credentials:\n  ci:\n", []string{
			"bad.yaml:2: credentials.ci: missing value"}},
		{"credential name", "credentials:\n  a/b: {source: env, name: T}\n", []string{
			"bad.yaml:2: credentials.a/b: a name must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"}},
		{"vault-kv needs field", "vault:\n  auth: {method: token, token: env:VAULT_TOKEN}\n" +
			"credentials:\n  gh:\n    source: vault-kv\n    path: secret/data/gh\n", []string{
			"bad.yaml:4: credentials.gh: field is required for source vault-kv"}},
		{"vault-kv needs vault", "credentials:\n  gh:\n    source: vault-kv\n    path: secret/data/gh\n    field: token\n", []string{
			"bad.yaml:3: credentials.gh: source vault-kv needs a vault section"}},
		{"vault-lease needs path", "vault:\n  auth: {method: token, token: env:VAULT_TOKEN}\n" +
			"credentials:\n  db:\n    source: vault-lease\n    renew: true\n", []string{
			"bad.yaml:4: credentials.db: path is required for source vault-lease"}},
		{"file needs path", "credentials:\n  f:\n    source: file\n", []string{
			"bad.yaml:2: credentials.f: path is required for source file"}},
		{"env needs name", "credentials:\n  e:\n    source: env\n    name: 1TOKEN\n", []string{
			`bad.yaml:4: credentials.e.name: "1TOKEN" is not an environment variable name`}},
		{"oauth2 needs fields", "credentials:\n  o:\n    source: oauth2\n    token_url: ftp://auth.example/token\n", []string{
			"bad.yaml:2: credentials.o: client_id is required for source oauth2",
			"bad.yaml:2: credentials.o: client_secret is required for source oauth2",
			"bad.yaml:4: credentials.o.token_url: must be an absolute http or https URL with a host"}},
		{"oauth2 reserved param", "credentials:\n  o:\n    source: oauth2\n    token_url: https://a.example/t\n" +
			"    client_id: me\n    client_secret: env:S\n    params:\n      resource: https://api.example\n      grant_type: password\n", []string{
			`bad.yaml:9: credentials.o.params: "grant_type" is set by sidekey and cannot be given as a parameter`}},
		{"oauth2 auth style", "credentials:\n  o:\n    source: oauth2\n    token_url: https://a.example/t\n" +
			"    client_id: me\n    client_secret: env:S\n    auth_style: header\n", []string{
			`bad.yaml:7: credentials.o.auth_style: "header" is not one of basic, post`}},
		{"exec empty command", "credentials:\n  x:\n    source: exec\n    command: []\n", []string{
			"bad.yaml:4: credentials.x.command: must name a program to run"}},
		{"exec zero timeout", "credentials:\n  x:\n    source: exec\n    command: [true]\n    timeout: 0s\n", []string{
			"bad.yaml:5: credentials.x.timeout: must be more than zero"}},
		{"refresh_before percentage", "credentials:\n  e:\n    source: env\n    name: T\n    refresh_before: 100%\n", []string{
			`bad.yaml:5: credentials.e.refresh_before: "100%" is not a percentage between 0% and 100%`}},
		{"refresh_before neither", "credentials:\n  e:\n    source: env\n    name: T\n    refresh_before: 0.3\n", []string{
			`bad.yaml:5: credentials.e.refresh_before: "0.3" is neither a percentage (33%) nor a duration (2m) above zero`}},

		// Routes.
		{"route name missing", "routes:\n  - match: {host: a.example}\n    upstream: https://a.example\n", []string{
			"bad.yaml:2: routes[0]: name is required"}},
		{"route name duplicate", routePrelude + "  - name: r\n    match: {path_prefix: /s/}\n    upstream: https://up.example\n", []string{
			`bad.yaml:7: routes[1].name: "r" is already the name of the route at line 4`}},
		{"route match empty", "routes:\n  - name: r\n    match: {}\n    upstream: https://a.example\n", []string{
			"bad.yaml:3: routes[0].match: needs host, path_prefix or both"}},
		{"route match missing", "routes:\n  - name: r\n    upstream: https://a.example\n", []string{
			"bad.yaml:2: routes[0]: match is required"}},
		{"path_prefix without slash", "routes:\n  - name: r\n    match:\n      path_prefix: api/\n    upstream: https://a.example\n", []string{
			`bad.yaml:4: routes[0].match.path_prefix: must start with "/"`}},
		{"route same match", routePrelude + "  - name: s\n    match: {path_prefix: /r/}\n    upstream: https://up.example\n", []string{
			"bad.yaml:8: routes[1].match: the same host and path_prefix as the route at line 4"}},
		{"upstream relative", "routes:\n  - name: r\n    match: {host: a.example}\n    upstream: /api\n", []string{
			"bad.yaml:4: routes[0].upstream: must be an absolute http or https URL with a host"}},
		{"upstream scheme", "routes:\n  - name: r\n    match: {host: a.example}\n    upstream: ftp://a.example\n", []string{
			"bad.yaml:4: routes[0].upstream: must be an absolute http or https URL with a host"}},
		{"upstream user info", "routes:\n  - name: r\n    match: {host: a.example}\n    upstream: https://u:pw@a.example\n", []string{
			"bad.yaml:4: routes[0].upstream: must not carry user info; credentials belong in the credentials section"}},
		{"route timeout zero", routePrelude + "    timeout: 0s\n", []string{
			"bad.yaml:7: routes[0].timeout: must be more than zero"}},
		{"strip_prefix without path_prefix", "routes:\n  - name: r\n    match: {host: a.example}\n    upstream: https://a.example\n    strip_prefix: true\n", []string{
			"bad.yaml:5: routes[0].strip_prefix: needs match.path_prefix"}},
		{"inject undefined credential", routePrelude + "    inject: {credential: gh}\n", []string{
			`bad.yaml:7: routes[0].inject.credential: no credential is named "gh"`}},
		{"inject credential missing", routePrelude + "    inject:\n      as: bearer\n", []string{
			"bad.yaml:7: routes[0].inject: credential is required"}},
		{"inject as unknown", routePrelude + "    inject:\n      credential: tok\n      as: cookie\n", []string{
			`bad.yaml:9: routes[0].inject.as: "cookie" is not one of bearer, header, basic, query, aws-sigv4`}},
		{"inject header needs header", routePrelude + "    inject:\n      credential: tok\n      as: header\n", []string{
			"bad.yaml:7: routes[0].inject: header is required for as: header"}},
		{"inject header name", routePrelude + "    inject:\n      credential: tok\n      as: header\n      header: X Key\n", []string{
			`bad.yaml:10: routes[0].inject.header: "X Key" is not a header name`}},
		{"inject format twice", routePrelude + "    inject:\n      credential: tok\n      as: header\n      header: X-Key\n      format: \"%s %s\"\n", []string{
			"bad.yaml:11: routes[0].inject.format: must contain %s exactly once, and no other %"}},
		{"inject format missing", routePrelude + "    inject:\n      credential: tok\n      as: header\n      header: X-Key\n      format: token\n", []string{
			"bad.yaml:11: routes[0].inject.format: must contain %s exactly once, and no other %"}},
		{"inject field of another form", routePrelude + "    inject:\n      credential: tok\n      param: key\n", []string{
			"bad.yaml:9: routes[0].inject: param is not used by as: bearer"}},
		{"inject query needs param", routePrelude + "    inject:\n      credential: tok\n      as: query\n", []string{
			"bad.yaml:7: routes[0].inject: param is required for as: query"}},
		{"inject sigv4 needs region and service", routePrelude + "    inject:\n      credential: tok\n      as: aws-sigv4\n      region: eu-west-1\n", []string{
			"bad.yaml:7: routes[0].inject: service is required for as: aws-sigv4"}},
		{"upstream_tls unknown certificate", routePrelude + "    upstream_tls:\n      client_cert: mtls\n", []string{
			`bad.yaml:8: routes[0].upstream_tls.client_cert: no certificate is named "mtls"`}},
		{"upstream_tls on http", "routes:\n  - name: r\n    match: {host: a.example}\n    upstream: http://a.example\n" +
			"    upstream_tls: {ca: file:/etc/ca.pem}\n", []string{
			"bad.yaml:5: routes[0].upstream_tls: needs an https upstream"}},
		{"empty route", "routes:\n  -\n", []string{
			"bad.yaml:2: routes[0]: empty list item"}},

		// Certificates.
		{"certificate source", "certificates:\n  c:\n    source: acme\n", []string{
			`bad.yaml:3: certificates.c.source: "acme" is not one of vault-pki, file`}},
		{"vault-pki needs common_name", "vault:\n  auth: {method: token, token: env:VAULT_TOKEN}\n" +
			"certificates:\n  c:\n    source: vault-pki\n    path: pki/issue/x\n    ttl: 0s\n", []string{
			"bad.yaml:4: certificates.c: common_name is required for source vault-pki",
			"bad.yaml:7: certificates.c.ttl: must be more than zero"}},
		{"file certificate", "certificates:\n  c:\n    source: file\n    cert: /etc/c.pem\n    path: pki/issue/x\n", []string{
			"bad.yaml:2: certificates.c: key is required for source file",
			"bad.yaml:5: certificates.c: path is not used by source file"}},

		// Inbound TLS.
		{"tls needs acme", "tls:\n  listen: 127.0.0.1:8443\n", []string{
			"bad.yaml:1: tls: acme is required"}},
		{"acme domains empty", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: []\n", []string{
			"bad.yaml:4: tls.acme.domains: must not be empty"}},
		{"acme challenge", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: [a.example]\n    challenge: dns-01\n", []string{
			`bad.yaml:5: tls.acme.challenge: "dns-01" is not one of tls-alpn-01, http-01`}},
		{"acme http-01 needs http_listen", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: [a.example]\n    challenge: http-01\n", []string{
			"bad.yaml:3: tls.acme: http_listen is required for challenge http-01"}},
		{"acme http_listen unused", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: [a.example]\n    http_listen: 127.0.0.1:80\n", []string{
			"bad.yaml:5: tls.acme: http_listen is only used by challenge http-01"}},
		{"acme storage", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: [a.example]\n    storage: disk\n", []string{
			"bad.yaml:5: tls.acme.storage: must be memory or vault:PATH"}},
		{"acme vault storage needs vault", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: [a.example]\n    storage: vault:secret/data/acme\n", []string{
			"bad.yaml:5: tls.acme.storage: storage vault: needs a vault section"}},
		{"acme wildcard", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: [a.example, \"*.a.example\"]\n", []string{
			"bad.yaml:4: tls.acme.domains[1]: wildcard names are not supported"}},

		// Vault.
		{"vault auth missing", "vault:\n  address: https://vault.example:8200\n", []string{
			"bad.yaml:1: vault: auth is required"}},
		{"vault method", "vault:\n  auth:\n    method: ldap\n", []string{
			`bad.yaml:3: vault.auth.method: "ldap" is not one of token, approle, kubernetes`}},
		{"vault token needs token", "vault:\n  auth:\n    method: token\n", []string{
			"bad.yaml:2: vault.auth: token is required for method token"}},
		{"vault approle", "vault:\n  auth:\n    method: approle\n    role_id: file:/etc/role-id\n    role: x\n", []string{
			"bad.yaml:2: vault.auth: secret_id is required for method approle",
			"bad.yaml:5: vault.auth: role is not used by method approle"}},
		{"vault kubernetes needs role", "vault:\n  auth:\n    method: kubernetes\n", []string{
			"bad.yaml:2: vault.auth: role is required for method kubernetes"}},
		{"vault login from vault", "vault:\n  auth:\n    method: token\n    token: vault:secret/data/t#token\n", []string{
			"bad.yaml:4: vault.auth.token: cannot be a vault: reference: it is needed to log in to vault"}},
		{"vault address", "vault:\n  address: vault.example:8200\n  auth: {method: token, token: env:T}\n", []string{
			"bad.yaml:2: vault.address: must be an absolute http or https URL with a host"}},
		{"vault reference needs vault", "admin:\n  token: vault:secret/data/admin#token\n", []string{
			"bad.yaml:2: admin.token: a vault: reference needs a vault section"}},

		// Callers.
		{"reachable listen needs callers", "credentials:\n  t: {source: env, name: T}\nlisten: 0.0.0.0:8080\n", []string{
			`bad.yaml:3: listen: "0.0.0.0:8080" is reachable from the network: define callers (who may use the credentials), ` +
				"listen on loopback or a unix socket, or set allow_anonymous: true"}},
		{"reachable tls listen needs callers", "tls:\n  listen: :8443\n  acme: {domains: [a.example]}\n", []string{
			`bad.yaml:2: tls.listen: ":8443" is reachable from the network: define callers (who may use the credentials), ` +
				"listen on loopback or a unix socket, or set allow_anonymous: true"}},
		{"reachable forward listen needs callers", "forward_proxy:\n  listen: 0.0.0.0:3128\n", []string{
			`bad.yaml:2: forward_proxy.listen: "0.0.0.0:3128" is reachable from the network: define callers (who may use the credentials), ` +
				"listen on loopback or a unix socket, or set allow_anonymous: true"}},
		{"unix listen without a path", "listen: \"unix:\"\n", []string{
			"bad.yaml:1: listen: unix: needs the path of the socket"}},
		{"caller kinds", "callers:\n  a: {}\n  b: {token: env:B, uid: 5}\n  c: {uid: -1}\n  d: {token: hunter2}\n", []string{
			"bad.yaml:2: callers.a: needs exactly one of token, cert and uid",
			"bad.yaml:3: callers.b: needs exactly one of token, cert and uid",
			"bad.yaml:4: callers.c.uid: -1 is not a user ID",
			"bad.yaml:5: callers.d.token: a literal secret is not allowed; use env:NAME, file:PATH or vault:PATH#FIELD"}},
		{"caller uid type", "callers:\n  a: {uid: me}\n", []string{
			"bad.yaml:2: callers.a.uid: expected a whole number"}},
		{"caller cert", "callers:\n  a:\n    cert: {uri: \"no scheme\", cn: x}\n  b:\n    cert: {dns: \"a b\"}\n", []string{
			`bad.yaml:3: callers.a.cert.uri: "no scheme" is not a URI (e.g. spiffe://cluster.local/ns/app/sa/app)`,
			"bad.yaml:3: callers.a.cert: needs exactly one of uri, dns and cn",
			`bad.yaml:5: callers.b.cert.dns: "a b" is not a host name`}},
		{"callers twice", "callers:\n  a: {uid: 7}\n  b: {uid: 7}\n  c: {cert: {cn: x}}\n  d: {cert: {cn: x}}\n", []string{
			"bad.yaml:3: callers.b.uid: the same uid as caller a",
			"bad.yaml:5: callers.d.cert: the same certificate as caller c"}},
		{"route callers", "callers:\n  a: {token: env:A}\nroutes:\n  - name: r\n    match: {path_prefix: /r/}\n" +
			"    upstream: http://127.0.0.1:9\n    callers: [a, b, a]\n  - name: s\n    match: {path_prefix: /s/}\n" +
			"    upstream: http://127.0.0.1:9\n    callers: []\n", []string{
			`bad.yaml:7: routes[0].callers[1]: no caller is named "b"`,
			`bad.yaml:7: routes[0].callers[2]: "a" is listed twice`,
			"bad.yaml:11: routes[1].callers: must not be empty; leave it out to admit every caller"}},
		{"by_caller", "callers:\n  a: {token: env:A}\n  b: {token: env:B}\ncredentials:\n  t: {source: env, name: T}\n" +
			"routes:\n  - name: r\n    match: {path_prefix: /r/}\n    upstream: http://127.0.0.1:9\n    callers: [a]\n" +
			"    inject:\n      credential: t\n      by_caller: {a: nope, b: t, c: t}\n", []string{
			`bad.yaml:13: routes[0].inject.by_caller.a: no credential is named "nope"`,
			`bad.yaml:13: routes[0].inject.by_caller.b: caller "b" is not among the route's callers`,
			`bad.yaml:13: routes[0].inject.by_caller.c: no caller is named "c"`}},
		{"allowed hosts and origins", "allowed_hosts: [gw.example, \"*.svc\", \"a b\"]\n" +
			"allowed_origins: [\"https://app.example\", \"app.example\", \"https://a.example/path\", \"ftp://a.example\"]\n", []string{
			`bad.yaml:1: allowed_hosts[2]: "a b" is not a host name or *.suffix pattern`,
			`bad.yaml:2: allowed_origins[1]: "app.example" is not an origin (scheme://host[:port], e.g. https://app.example.com)`,
			`bad.yaml:2: allowed_origins[2]: "https://a.example/path" is not an origin (scheme://host[:port], e.g. https://app.example.com)`,
			`bad.yaml:2: allowed_origins[3]: "ftp://a.example" is not an origin (scheme://host[:port], e.g. https://app.example.com)`}},
		{"client_ca is a reference", "tls:\n  listen: 127.0.0.1:8443\n  client_ca: /etc/ca.pem\n  acme: {domains: [a.example]}\n", []string{
			"bad.yaml:3: tls.client_ca: a literal secret is not allowed; use env:NAME, file:PATH or vault:PATH#FIELD"}},

		// Protocols.
		{"protocol", "routes:\n  - name: a\n    match: {path_prefix: /a/}\n    upstream: http://127.0.0.1:9\n    protocol: h3\n" +
			"  - name: b\n    match: {path_prefix: /b/}\n    upstream: http://127.0.0.1:9\n    protocol: h2\n" +
			"  - name: c\n    match: {path_prefix: /c/}\n    upstream: https://a.example\n    protocol: h2c\n", []string{
			`bad.yaml:5: routes[0].protocol: "h3" is not one of http1, h2, h2c, auto`,
			"bad.yaml:9: routes[1].protocol: h2 needs an https upstream (h2c is HTTP/2 without TLS)",
			"bad.yaml:13: routes[2].protocol: h2c needs an http upstream (h2 is HTTP/2 over TLS)"}},

		// Limits.
		{"limits", "limits:\n  max_connections: 0\n  max_connections_per_ip: -1\n  header_timeout: 0s\n  idle_timeout: soon\n", []string{
			"bad.yaml:2: limits.max_connections: must be at least 1",
			"bad.yaml:3: limits.max_connections_per_ip: must be at least 0",
			"bad.yaml:4: limits.header_timeout: must be more than zero",
			`bad.yaml:5: limits.idle_timeout: "soon" is not a duration (e.g. 30s, 5m, 1h)`}},

		// Forward proxy.
		{"forward proxy", "forward_proxy:\n  intercept_hosts: [api.example]\n  ca_cert_out: ./ca.pem\n", []string{
			"bad.yaml:1: forward_proxy: listen is required",
			`bad.yaml:2: forward_proxy: unknown key "intercept_hosts"`,
			`bad.yaml:3: forward_proxy: unknown key "ca_cert_out"`}},
		{"forward proxy without a CA", "routes:\n  - {name: a, match: {host: api.example}, upstream: \"https://api.example\"}\n" +
			"forward_proxy:\n  listen: 127.0.0.1:3128\n", []string{
			"bad.yaml:3: forward_proxy: ca is required: the apps must be given the CA certificate (ca.cert_out or ca.bundle_out) to trust what sidekey intercepts"}},
		{"forward proxy CA written nowhere", "routes:\n  - {name: a, match: {host: api.example}, upstream: \"https://api.example\"}\n" +
			"forward_proxy:\n  listen: 127.0.0.1:3128\n  ca: {}\n", []string{
			"bad.yaml:5: forward_proxy.ca: a generated CA needs cert_out or bundle_out: the apps must be given its certificate to trust it"}},
		{"forward proxy CA", "forward_proxy:\n  listen: 127.0.0.1:3128\n  ca:\n    cert_out: /run/ca.pem\n    bundle_out: /run/ca.pem\n" +
			"    cert: /etc/ca.pem\n", []string{
			"bad.yaml:3: forward_proxy.ca: cert and key go together: give both (a CA of your own) or neither (one generated in memory)",
			"bad.yaml:5: forward_proxy.ca.bundle_out: must not be the same file as cert_out",
			"bad.yaml:6: forward_proxy.ca.cert: a literal secret is not allowed; use env:NAME, file:PATH or vault:PATH#FIELD"}},
		{"forward proxy CA in vault", "forward_proxy:\n  listen: 127.0.0.1:3128\n  ca: {cert: \"vault:secret/data/ca#cert\", key: \"vault:secret/data/ca#key\"}\n", []string{
			"bad.yaml:3: forward_proxy.ca.cert: a vault: reference needs a vault section",
			"bad.yaml:3: forward_proxy.ca.key: a vault: reference needs a vault section"}},
		{"allow_tunnel", "forward_proxy:\n  listen: 127.0.0.1:3128\n  allow_tunnel:\n" +
			"    - \"*.amazonaws.com\"\n    - \"*.com\"\n    - a.*.example\n    - \"[::1]\"\n    - \"::1\"\n    - \"*.10.0.0.1\"\n" +
			"    - host.example:0\n    - user@host.example\n    - \"\"\n    - 127.1\n    - Git.Example:22\n", []string{
			`bad.yaml:5: forward_proxy.allow_tunnel[1]: "*.com": "*." needs a name of at least two labels after it`,
			`bad.yaml:6: forward_proxy.allow_tunnel[2]: "a.*.example": "*" is allowed only as a leading "*."`,
			`bad.yaml:8: forward_proxy.allow_tunnel[4]: "::1": IPv6 address without brackets`,
			`bad.yaml:9: forward_proxy.allow_tunnel[5]: "*.10.0.0.1": "*." before an IP address`,
			`bad.yaml:10: forward_proxy.allow_tunnel[6]: "host.example:0": port out of range`,
			`bad.yaml:11: forward_proxy.allow_tunnel[7]: "user@host.example": userinfo`,
			`bad.yaml:12: forward_proxy.allow_tunnel[8]: "": empty pattern`,
			`bad.yaml:13: forward_proxy.allow_tunnel[9]: "127.1": last label does not begin with a letter`}},
		{"allow_addresses", "forward_proxy:\n  listen: 127.0.0.1:3128\n  allow_addresses: [10.0.0.0/8, 10.1.2.3/8, \"::ffff:0.0.0.0/8\", \"fe80::1%eth0\", ten, \"::1\"]\n", []string{
			`bad.yaml:3: forward_proxy.allow_addresses[1]: "10.1.2.3/8": has bits set past its /8: write 10.0.0.0/8`,
			`bad.yaml:3: forward_proxy.allow_addresses[2]: "::ffff:0.0.0.0/8": an IPv4-mapped range must be /96 or longer`,
			`bad.yaml:3: forward_proxy.allow_addresses[3]: "fe80::1%eth0": not a CIDR range (e.g. 10.0.0.0/8, fd00::/8) or an address`,
			`bad.yaml:3: forward_proxy.allow_addresses[4]: "ten": not a CIDR range (e.g. 10.0.0.0/8, fd00::/8) or an address`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := problemLines(t, tt.src)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// Listeners that the network cannot reach, or that callers guard, are
// accepted without callers or with them.
func TestListenersAccepted(t *testing.T) {
	for _, src := range []string{
		"listen: 0.0.0.0:8080\nallow_anonymous: true\n",
		"listen: 10.0.0.5:8080\ncallers:\n  a: {token: env:A}\n",
		"listen: localhost:8080\ntls:\n  listen: \"[::1]:8443\"\n  acme: {domains: [a.example]}\n",
		"listen: 127.0.0.2:8080\n",
		"listen: unix:/run/sidekey.sock\ncallers:\n  me: {uid: 1000}\n",
	} {
		cfg, err := Parse("ok.yaml", []byte(src))
		if err != nil {
			t.Errorf("%q: %v", src, err)
			continue
		}
		if w := cfg.Warnings(); len(w) > 0 {
			t.Errorf("%q: warnings %q", src, w)
		}
	}
}

func TestReachable(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:80": false, "127.9.9.9:80": false, "[::1]:80": false, "localhost:80": false, "LOCALHOST:80": false,
		"unix:/tmp/s": false, ":80": true, "0.0.0.0:80": true, "[::]:80": true, "10.0.0.1:80": true, "gw.example:80": true,
	} {
		if got := Reachable(addr); got != want {
			t.Errorf("Reachable(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestForwardProxyWarnings(t *testing.T) {
	route := "routes:\n  - {name: a, match: {host: API.Example:8443}, upstream: \"https://api.example\"}\n" +
		"  - {name: b, match: {host: api.example, path_prefix: /b/}, upstream: \"https://api.example\"}\n" +
		"  - {name: c, match: {path_prefix: /c/}, upstream: \"https://c.example\"}\n"
	fwd := "forward_proxy:\n  listen: 127.0.0.1:3128\n  ca: {cert_out: /run/ca.pem}\n"
	if cfg := mustParse(t, route+fwd); len(cfg.Warnings()) != 0 || !reflect.DeepEqual(cfg.RouteHosts(), []string{"api.example"}) {
		t.Errorf("warnings %q, route hosts %q", cfg.Warnings(), cfg.RouteHosts())
	}
	cfg := mustParse(t, fwd)
	want := []string{"test.yaml:1: forward_proxy: no route has a match.host, so nothing is intercepted " +
		"(only allow_tunnel destinations pass) and no CA is made"}
	if got := cfg.Warnings(); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings = %q, want %q", got, want)
	}
	if cfg := mustParse(t, "forward_proxy:\n  listen: 127.0.0.1:3128\n"); len(cfg.Warnings()) != 1 || !cfg.ForwardProxy.CA.Generated() {
		t.Errorf("a tunnel-only forward proxy needs no ca: %q", cfg.Warnings())
	}
}

func TestCallerWarnings(t *testing.T) {
	cfg := mustParse(t, "callers:\n  a: {cert: {cn: x}}\n  b: {uid: 3}\n  c: {token: env:C}\n")
	want := []string{
		"test.yaml:2: callers.a: a cert caller is never identified without tls.client_ca",
		"test.yaml:3: callers.b: a uid caller is never identified without a unix-socket listen (listen: unix:PATH)",
	}
	if got := cfg.Warnings(); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings = %q, want %q", got, want)
	}
	if got := cfg.CallerCredentials(); len(got) != 1 || got[0].Name != "caller:c" || got[0].Source != SourceEnv || got[0].EnvName != "C" {
		t.Errorf("caller credentials = %+v", got)
	}
}

func TestParseReportsEveryProblemInLineOrder(t *testing.T) {
	src := `log:
  level: loud
credentials:
  e:
    source: env
    nmae: TOKEN
routes:
  - name: r
    match: {path_prefix: r}
    upstream: https://a.example
    inject: {credential: missing}
    timeout: soon
`
	want := []string{
		`bad.yaml:2: log.level: "loud" is not one of debug, info, warn, error`,
		"bad.yaml:4: credentials.e: name is required for source env",
		`bad.yaml:6: credentials.e: unknown key "nmae"`,
		`bad.yaml:9: routes[0].match.path_prefix: must start with "/"`,
		`bad.yaml:11: routes[0].inject.credential: no credential is named "missing"`,
		`bad.yaml:12: routes[0].timeout: "soon" is not a duration (e.g. 30s, 5m, 1h)`,
	}
	got := problemLines(t, src)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestProblems(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("listen: x\nlisen: y\n"))
	got := Problems(err)
	want := []Problem{
		{File: "bad.yaml", Line: 1, Msg: `listen: "x" is not a listen address: want host:port, e.g. 127.0.0.1:8080 or :8443`},
		{File: "bad.yaml", Line: 2, Msg: `unknown key "lisen"`},
	}
	if len(got) != len(want) {
		t.Fatalf("Problems = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Problems[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if Problems(nil) != nil {
		t.Errorf("Problems(nil) is not nil")
	}
}

func TestParseStopsAliasExpansion(t *testing.T) {
	var b strings.Builder
	b.WriteString("x: &s [")
	for i := range 400 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("a")
	}
	b.WriteString("]\ncredentials:\n")
	for i := range 400 {
		b.WriteString("  c" + strconv.Itoa(i) + ": &c" + strconv.Itoa(i) + " {source: oauth2, scopes: *s}\n")
	}
	got := problemLines(t, b.String())
	want := "the file expands to more than 100000 values; are aliases nested?"
	if !strings.Contains(strings.Join(got, "\n"), want) {
		t.Errorf("problems do not say %q", want)
	}
}

// An oauth2 revocation_url asks for superseded tokens to be revoked.
func TestOAuth2RevocationURLRevokesSuperseded(t *testing.T) {
	base := "credentials:\n  p:\n    source: oauth2\n    token_url: https://a.example/token\n    client_id: x\n    client_secret: env:S\n"
	for _, tc := range []struct {
		extra string
		want  bool
	}{
		{"    revocation_url: https://a.example/revoke\n", true},
		{"", false},
	} {
		cfg, err := Parse("c.yaml", []byte(base+tc.extra))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Credential("p").RevokeOld; got != tc.want {
			t.Errorf("revocation_url %q: RevokeOld = %v, want %v", tc.extra, got, tc.want)
		}
	}
	cfg, err := Parse("c.yaml", []byte("credentials:\n  l:\n    source: vault-lease\n    path: aws/creds/x\n    revoke_old: true\nvault:\n  auth: {method: token, token: env:T}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Credential("l").RevokeOld {
		t.Error("vault-lease revoke_old lost")
	}
}
