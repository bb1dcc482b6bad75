package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		want    Ref
		wantErr error
	}{
		{"env:GITHUB_TOKEN", Ref{Kind: RefEnv, Name: "GITHUB_TOKEN"}, nil},
		{"file:/var/run/secrets/token", Ref{Kind: RefFile, Name: "/var/run/secrets/token"}, nil},
		{"file:./relative", Ref{Kind: RefFile, Name: "./relative"}, nil},
		{"vault:secret/data/partner#client_secret", Ref{Kind: RefVault, Name: "secret/data/partner", Field: "client_secret"}, nil},
		{"vault:kv/a#b#c", Ref{Kind: RefVault, Name: "kv/a#b", Field: "c"}, nil},
		{"", Ref{}, ErrBadRef},
		{"env:", Ref{}, ErrBadRef},
		{"env:1TOKEN", Ref{}, ErrBadRef},
		{"env:MY-TOKEN", Ref{}, ErrBadRef},
		{"file:", Ref{}, ErrBadRef},
		{"vault:secret/data/x", Ref{}, ErrBadRef},
		{"vault:#field", Ref{}, ErrBadRef},
		{"vault:secret/data/x#", Ref{}, ErrBadRef},
		{"hunter2", Ref{}, ErrLiteralSecret},
		{"Bearer abc.def", Ref{}, ErrLiteralSecret},
		{"https://user:pass@example.com", Ref{}, ErrLiteralSecret},
		{"ENV:TOKEN", Ref{}, ErrLiteralSecret},
	}
	for _, tt := range tests {
		got, err := ParseRef(tt.in)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && len(tt.in) > len("vault:") && strings.Contains(err.Error(), tt.in) {
			t.Errorf("ParseRef(%q) error %q contains the value", tt.in, err)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("ParseRef(%q).String() = %q", tt.in, got.String())
		}
	}
}

// TestLiteralSecretsRefused puts a literal in every secret-carrying field.
// The literal is made at run time and must not appear in any message.
func TestLiteralSecretsRefused(t *testing.T) {
	secret := "correct-" + "horse-battery-staple"
	tests := []struct {
		name, src, path string
		line            int
	}{
		{"admin token", "admin:\n  token: %s\n", "admin.token", 2},
		{"vault token", "vault:\n  auth:\n    method: token\n    token: %s\n", "vault.auth.token", 4},
		{"vault role_id", "vault:\n  auth:\n    method: approle\n    role_id: %s\n    secret_id: env:S\n", "vault.auth.role_id", 4},
		{"vault secret_id", "vault:\n  auth:\n    method: approle\n    role_id: env:R\n    secret_id: %s\n", "vault.auth.secret_id", 5},
		{"vault jwt", "vault:\n  auth:\n    method: kubernetes\n    role: r\n    jwt: %s\n", "vault.auth.jwt", 5},
		{"client secret", "credentials:\n  o:\n    source: oauth2\n    token_url: https://a.example/t\n    client_id: me\n    client_secret: %s\n",
			"credentials.o.client_secret", 6},
		{"upstream ca", routePrelude + "    upstream_tls:\n      ca: %s\n", "routes[0].upstream_tls.ca", 8},
		{"acme ca roots", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    domains: [a.example]\n    ca_roots: %s\n", "tls.acme.ca_roots", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(tt.src, "%s", secret, 1)
			got := problemLines(t, src)
			want := "bad.yaml:" + strconv.Itoa(tt.line) + ": " + tt.path +
				": a literal secret is not allowed; use env:NAME, file:PATH or vault:PATH#FIELD"
			if len(got) != 1 || got[0] != want {
				t.Errorf("problems = %q, want %q", got, want)
			}
			if strings.Contains(strings.Join(got, "\n"), secret) {
				t.Errorf("a message holds the secret")
			}
		})
	}
}

// TestSecretsNeverEchoed puts secret-looking values in fields whose
// problems could quote them.
func TestSecretsNeverEchoed(t *testing.T) {
	token := "ghp_" + strings.Repeat("x9Y", 12)
	srcs := []string{
		"admin:\n  token: \"" + token + "\"\n",
		"admin:\n  token: \"vault:" + token + "\"\n",
		"log:\n  level: " + token + "\n",
		"shutdown_timeout: " + token + "\n",
		"credentials:\n  " + token + ":\n    source: env\n    name: T\n    x: 1\n",
		routePrelude + "    inject: {credential: " + token + "}\n",
		routePrelude + "    upstream_tls: {client_cert: " + token + "}\n",
		"routes:\n  - name: r\n    match: {host: a.example}\n    upstream: https://a.example/?token=" + token + "#x\n",
	}
	for _, src := range srcs {
		_, err := Parse("bad.yaml", []byte(src))
		if err == nil {
			t.Errorf("Parse accepted %q", src)
			continue
		}
		if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), token[4:]) {
			t.Errorf("the value appears in:\n%v", err)
		}
	}
}
