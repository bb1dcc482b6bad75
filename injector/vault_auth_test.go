package injector

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/sidekey/sidekey/config"
)

func TestPlanAuth(t *testing.T) {
	now := epoch.Add(time.Hour)
	session := func(age, ttl time.Duration, renewable bool) *vaultSession {
		return &vaultSession{obtained: now.Add(-age), ttl: ttl, increment: ttl, renewable: renewable}
	}
	tests := []struct {
		name      string
		s         *vaultSession
		jitter    float64
		wantLogin bool
		wantAt    time.Time
	}{
		{"no token: log in now", nil, 0, true, now},
		{"no TTL: nothing to do", session(0, 0, false), 0, false, time.Time{}},
		{"renewable: renew at two thirds", session(0, 30*time.Minute, true), 0, false, now.Add(20 * time.Minute)},
		{"jitter moves it earlier", session(0, 30*time.Minute, true), 0.5, false, now.Add(19 * time.Minute)},
		{"from when it was obtained", session(10*time.Minute, 30*time.Minute, true), 0, false, now.Add(10 * time.Minute)},
		{"not renewable: log in at two thirds", session(0, 6*time.Minute, false), 0, true, now.Add(4 * time.Minute)},
		{"overdue: not before the floor", session(time.Hour, 30*time.Minute, true), 0, false, now.Add(minRefreshDelay)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			login, at := planAuth(now, tt.s, tt.jitter)
			if login != tt.wantLogin || !at.Equal(tt.wantAt) {
				t.Errorf("planAuth = %v, +%v; want %v, +%v", login, at.Sub(now), tt.wantLogin, tt.wantAt.Sub(now))
			}
		})
	}
}

func TestGrantFromLookup(t *testing.T) {
	g, err := grantFromLookup("tok", &api.Secret{Data: map[string]any{
		"ttl": json.Number("1200"), "creation_ttl": json.Number("3600"), "renewable": true,
	}})
	want := tokenGrant{token: "tok", ttl: 20 * time.Minute, increment: time.Hour, renewable: true}
	if err != nil || g != want {
		t.Errorf("grant %+v, %v; want %+v", g, err, want)
	}
	g, err = grantFromLookup("root", &api.Secret{Data: map[string]any{"ttl": json.Number("0")}})
	if err != nil || g.ttl != 0 || g.owned {
		t.Errorf("root token: %+v, %v", g, err)
	}
	if _, err := grantFromLookup("tok", nil); err == nil {
		t.Error("an empty lookup accepted")
	}
}

func TestKubernetesLogin(t *testing.T) {
	f := newFakeVault(t)
	var got map[string]any
	f.handle("PUT /v1/auth/k8s-prod/login", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		got = body
		vaultReply(w, 200, map[string]any{"auth": map[string]any{"client_token": "k8s-tok", "lease_duration": 3600, "renewable": true}})
	})
	jwtFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(jwtFile, []byte("eyJhbGciOi.sa-jwt.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vt := newVaultTest(t, f, config.VaultAuth{Method: "kubernetes", Mount: "/k8s-prod/", Role: "payments",
		JWT: &config.Ref{Kind: config.RefFile, Name: jwtFile}})
	vt.run(t)
	eventually(t, "the login", func() bool { return vt.token() == "k8s-tok" })
	if got["role"] != "payments" || got["jwt"] != "eyJhbGciOi.sa-jwt.sig" {
		t.Errorf("login body %v", got)
	}
	if !vt.secrets.has("eyJhbGciOi.sa-jwt.sig") || !vt.secrets.has("k8s-tok") {
		t.Error("the JWT and the token must be registered with the redactor")
	}
	assertLogsClean(t, vt.hook, "eyJhbGciOi.sa-jwt.sig", "k8s-tok")
}

// The token method reads its token again when Vault refuses the one it
// has: an agent beside sidekey may have replaced the file.
func TestTokenMethodRereadsTheToken(t *testing.T) {
	f := newFakeVault(t)
	f.tokenLookup(0, false)
	f.handle("GET /v1/kv/data/app", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if r.Header.Get("X-Vault-Token") != "new-token" {
			vaultRefuse(w, 403, "permission denied")
			return
		}
		kvAnswer("v", 1)(w, r, body)
	})
	file := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(file, []byte("old-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	vt := newVaultTest(t, f, config.VaultAuth{Method: "token", Token: &config.Ref{Kind: config.RefFile, Name: file}})
	vt.run(t)
	eventually(t, "the first token", func() bool { return vt.token() == "old-token" })
	if err := os.WriteFile(file, []byte("new-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	vt.clk.Advance(minReloginAge)
	if _, err := vt.vc.Read(context.Background(), "kv/data/app"); err != nil {
		t.Fatalf("Read: %v", err)
	}
	if vt.token() != "new-token" || vt.secrets.has("old-token") || !vt.secrets.has("new-token") {
		t.Errorf("token %q after the refusal", vt.token())
	}
}
