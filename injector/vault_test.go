package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/config"
)

// The tests in this package talk to a small fake of Vault's HTTP API, for
// the failures a real Vault cannot be made to produce on demand (a 500, a
// torn connection) and for scheduling on a fake clock. The real Vault runs
// in the e2e module.

// fakeVault answers the routes a test registers ("METHOD /v1/path") and
// counts the calls. Unregistered routes answer 404.
type fakeVault struct {
	srv *httptest.Server

	mu     sync.Mutex
	routes map[string]vaultHandler
	calls  map[string]int
	tokens map[string][]string // X-Vault-Token of each call, by route
}

type vaultHandler func(w http.ResponseWriter, r *http.Request, body map[string]any)

func newFakeVault(t *testing.T) *fakeVault {
	f := &fakeVault{routes: map[string]vaultHandler{}, calls: map[string]int{}, tokens: map[string][]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	if r.Method == http.MethodPost {
		route = "PUT " + r.URL.Path
	}
	var body map[string]any
	if r.Body != nil {
		d := json.NewDecoder(r.Body)
		d.UseNumber()
		_ = d.Decode(&body)
	}
	f.mu.Lock()
	h := f.routes[route]
	f.calls[route]++
	f.tokens[route] = append(f.tokens[route], r.Header.Get("X-Vault-Token"))
	f.mu.Unlock()
	if h == nil {
		vaultReply(w, http.StatusNotFound, map[string]any{"errors": []string{}})
		return
	}
	h(w, r, body)
}

func (f *fakeVault) handle(route string, h vaultHandler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[route] = h
}

func (f *fakeVault) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

func (f *fakeVault) tokensOf(route string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens[route]...)
}

func vaultReply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func vaultRefuse(w http.ResponseWriter, status int, msg string) {
	vaultReply(w, status, map[string]any{"errors": []string{msg}})
}

// tearConnection closes the connection without an answer.
func tearConnection(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

// tokenLookup answers lookup-self for any token with the given TTL.
func (f *fakeVault) tokenLookup(ttl int, renewable bool) {
	f.handle("GET /v1/auth/token/lookup-self", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		vaultReply(w, 200, map[string]any{"data": map[string]any{
			"ttl": ttl, "creation_ttl": ttl, "renewable": renewable,
		}})
	})
}

// appRoleLogins answers approle logins with tokens tok-1, tok-2, ...
func (f *fakeVault) appRoleLogins(ttl int, renewable bool) {
	var n atomic.Int64
	f.handle("PUT /v1/auth/approle/login", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if body["role_id"] != testRoleID || body["secret_id"] != testSecretID {
			vaultRefuse(w, 400, "invalid role or secret ID")
			return
		}
		vaultReply(w, 200, map[string]any{"auth": map[string]any{
			"client_token": fmt.Sprintf("tok-%d", n.Add(1)), "lease_duration": ttl, "renewable": renewable,
		}})
	})
}

const (
	testVaultToken = "hvs.test-operator-token"
	testRoleID     = "role-id-5f1d"
	testSecretID   = "secret-id-9c3e"
)

// tokenAuth is the token method reading testVaultToken from the
// environment.
func tokenAuth(t *testing.T) config.VaultAuth {
	t.Setenv("SIDEKEY_TEST_VAULT_TOKEN", testVaultToken)
	return config.VaultAuth{Method: "token", Token: &config.Ref{Kind: config.RefEnv, Name: "SIDEKEY_TEST_VAULT_TOKEN"}}
}

// appRoleAuth is the approle method reading testRoleID and testSecretID
// from the environment.
func appRoleAuth(t *testing.T) config.VaultAuth {
	t.Setenv("SIDEKEY_TEST_ROLE_ID", testRoleID)
	t.Setenv("SIDEKEY_TEST_SECRET_ID", testSecretID)
	return config.VaultAuth{Method: "approle", Mount: "approle",
		RoleID:   &config.Ref{Kind: config.RefEnv, Name: "SIDEKEY_TEST_ROLE_ID"},
		SecretID: &config.Ref{Kind: config.RefEnv, Name: "SIDEKEY_TEST_SECRET_ID"}}
}

type vaultTest struct {
	vc      *VaultClient
	clk     *fakeClock
	hook    *test.Hook
	secrets *fakeSecrets
}

// newVaultTest builds a client of f on a fake clock with jitter fixed at
// zero, logs captured at debug and secrets recorded; it does not run it.
func newVaultTest(t *testing.T, f *fakeVault, auth config.VaultAuth) *vaultTest {
	t.Helper()
	clk := newFakeClock()
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	secrets := newFakeSecrets()
	vc, err := NewVaultClient(&config.Vault{Address: f.srv.URL, Auth: auth},
		VaultOptions{Clock: clk, Log: log, Secrets: secrets})
	if err != nil {
		t.Fatalf("NewVaultClient: %v", err)
	}
	vc.random = func() float64 { return 0 }
	return &vaultTest{vc: vc, clk: clk, hook: hook, secrets: secrets}
}

// run runs the client until the test ends.
func (vt *vaultTest) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- vt.vc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Error("Run did not return after cancel")
		}
	})
}

// token is the client's current token, or "".
func (vt *vaultTest) token() string {
	if s := vt.vc.current(); s != nil {
		return s.token
	}
	return ""
}

// assertLogsClean fails when a captured log entry holds any of the values.
func assertLogsClean(t *testing.T, hook *test.Hook, values ...string) {
	t.Helper()
	for _, e := range hook.AllEntries() {
		line, err := e.String()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if strings.Contains(line, v) {
				t.Errorf("log line holds a secret: %s", line)
			}
		}
	}
}

func TestVaultOutageKeepsCurrentValue(t *testing.T) {
	f := newFakeVault(t)
	f.tokenLookup(0, false)
	var mode atomic.Value
	mode.Store("ok")
	var n atomic.Int64
	f.handle("GET /v1/database/creds/app", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		switch mode.Load() {
		case "500":
			vaultRefuse(w, 500, "internal error")
		case "tear":
			tearConnection(w)
		default:
			i := n.Add(1)
			vaultReply(w, 200, map[string]any{
				"lease_id": fmt.Sprintf("database/creds/app/%d", i), "lease_duration": 60, "renewable": true,
				"data": map[string]any{"username": fmt.Sprintf("u-%d", i), "password": fmt.Sprintf("p-%d", i)},
			})
		}
	})
	vt := newVaultTest(t, f, tokenAuth(t))
	vt.run(t)
	h := &Holder{Name: "db", Source: &VaultLeaseSource{Client: vt.vc, Path: "database/creds/app", Clock: vt.clk},
		Clock: vt.clk, Log: vt.vc.log, Secrets: vt.secrets}
	ctx := context.Background()
	if err := h.Refresh(ctx); err != nil {
		t.Fatalf("first fetch: %v", err)
	}
	password := func() string {
		v, err := h.Acquire()
		if err != nil {
			return err.Error()
		}
		defer v.Release()
		return v.Secret().Fields["password"]
	}
	if got := password(); got != "p-1" {
		t.Fatalf("password = %q", got)
	}

	for _, m := range []string{"500", "tear"} {
		mode.Store(m)
		if err := h.Refresh(ctx); err == nil {
			t.Fatalf("%s: refresh succeeded", m)
		}
		if got := password(); got != "p-1" {
			t.Errorf("%s: password = %q, want the current p-1 kept", m, got)
		}
	}
	if st := h.Status(); !strings.Contains(st.LastError, "database/creds/app") || strings.Contains(st.LastError, testVaultToken) {
		t.Errorf("last error %q", st.LastError)
	}
	if vt.token() != testVaultToken {
		t.Error("the outage dropped the auth token")
	}

	vt.clk.Advance(61 * time.Second)
	if _, err := h.Acquire(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Acquire after expiry: %v, want ErrUnavailable", err)
	}
	mode.Store("ok")
	if err := h.Refresh(ctx); err != nil {
		t.Fatalf("refresh after recovery: %v", err)
	}
	if got := password(); got != "p-2" {
		t.Errorf("password after recovery = %q", got)
	}
	assertLogsClean(t, vt.hook, testVaultToken, "p-1", "p-2")
}

func TestVaultCallsCarryTheToken(t *testing.T) {
	f := newFakeVault(t)
	f.tokenLookup(0, false)
	f.handle("GET /v1/kv/data/app", kvAnswer("s3cr3t-1", 1))
	vt := newVaultTest(t, f, tokenAuth(t))
	vt.run(t)
	src := &VaultKVSource{Client: vt.vc, Path: "kv/app", Field: "token"}
	s, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Value != "s3cr3t-1" || s.Version != 1 {
		t.Errorf("got %q version %d", s.Value, s.Version)
	}
	if got := f.tokensOf("GET /v1/kv/data/app"); len(got) != 1 || got[0] != testVaultToken {
		t.Errorf("tokens sent: %q", got)
	}
	if !vt.secrets.has(testVaultToken) {
		t.Error("the token is not registered with the redactor")
	}
}

// kvAnswer answers a KV v2 read with a token field of the given value.
func kvAnswer(value string, version int) vaultHandler {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		vaultReply(w, 200, map[string]any{"data": map[string]any{
			"data":     map[string]any{"token": value, "user": "svc"},
			"metadata": map[string]any{"version": version, "created_time": "2030-01-01T00:00:00Z"},
		}})
	}
}

func TestVaultLogsInAgainOn403(t *testing.T) {
	f := newFakeVault(t)
	f.appRoleLogins(0, false)
	f.handle("GET /v1/kv/data/app", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if r.Header.Get("X-Vault-Token") == "tok-1" {
			vaultRefuse(w, 403, "permission denied")
			return
		}
		kvAnswer("v", 1)(w, r, body)
	})
	vt := newVaultTest(t, f, appRoleAuth(t))
	vt.run(t)
	eventually(t, "the first login", func() bool { return vt.token() == "tok-1" })
	vt.clk.Advance(minReloginAge)

	s, err := (&VaultKVSource{Client: vt.vc, Path: "kv/data/app", Field: "token"}).Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if s.Value != "v" {
		t.Errorf("value %q", s.Value)
	}
	if got := f.count("PUT /v1/auth/approle/login"); got != 2 {
		t.Errorf("%d logins, want 2", got)
	}
	eventually(t, "the old token unregistered", func() bool { return !vt.secrets.has("tok-1") })
	for _, v := range []string{"tok-2", testRoleID, testSecretID} {
		if !vt.secrets.has(v) {
			t.Errorf("%s is not registered with the redactor", v)
		}
	}
	assertLogsClean(t, vt.hook, "tok-1", "tok-2", testRoleID, testSecretID)
}

func TestVaultRenewsTokenThenLogsInAtMaxTTL(t *testing.T) {
	f := newFakeVault(t)
	f.appRoleLogins(30, true)
	var renewals atomic.Int64
	f.handle("PUT /v1/auth/token/renew-self", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		ttl := 30
		if renewals.Add(1) == 2 {
			ttl = 9 // capped by the max TTL
		}
		vaultReply(w, 200, map[string]any{"auth": map[string]any{
			"client_token": r.Header.Get("X-Vault-Token"), "lease_duration": ttl, "renewable": true,
		}})
	})
	vt := newVaultTest(t, f, appRoleAuth(t))
	vt.run(t)

	// Renewal at two thirds of each TTL; the capped one is followed by a
	// login at once.
	steps := []struct {
		after            time.Duration
		logins, renewals int
		wantToken        string
	}{
		{20 * time.Second, 1, 1, "tok-1"},
		{20 * time.Second, 2, 2, "tok-2"},
		{20 * time.Second, 2, 3, "tok-2"},
	}
	eventually(t, "the first login", func() bool { return vt.token() == "tok-1" })
	for i, st := range steps {
		vt.clk.WaitTimer(t, vt.clk.Now().Add(st.after))
		vt.clk.Advance(st.after)
		eventually(t, fmt.Sprintf("step %d", i), func() bool {
			return f.count("PUT /v1/auth/approle/login") == st.logins &&
				f.count("PUT /v1/auth/token/renew-self") == st.renewals && vt.token() == st.wantToken
		})
	}
	if got := f.tokensOf("PUT /v1/auth/token/renew-self"); strings.Join(got, ",") != "tok-1,tok-1,tok-2" {
		t.Errorf("renew-self sent with %q", got)
	}
}

func TestVaultLoginBacksOffAndCallsWait(t *testing.T) {
	f := newFakeVault(t)
	f.appRoleLogins(0, false)
	login := f.routes["PUT /v1/auth/approle/login"]
	var fails atomic.Int64
	fails.Store(2)
	f.handle("PUT /v1/auth/approle/login", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if fails.Add(-1) >= 0 {
			vaultRefuse(w, 503, "Vault is sealed")
			return
		}
		login(w, r, body)
	})
	f.handle("GET /v1/kv/data/app", kvAnswer("v", 1))
	vt := newVaultTest(t, f, appRoleAuth(t))
	vt.run(t)

	got := make(chan error, 1)
	go func() {
		_, err := (&VaultKVSource{Client: vt.vc, Path: "kv/data/app", Field: "token"}).Fetch(context.Background())
		got <- err
	}()
	// 1s after the first failure, 2s after the second.
	vt.clk.WaitTimer(t, epoch.Add(time.Second))
	vt.clk.Advance(time.Second)
	vt.clk.WaitTimer(t, epoch.Add(3*time.Second))
	vt.clk.Advance(2 * time.Second)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Fetch did not return after the login")
	}
	if n := f.count("PUT /v1/auth/approle/login"); n != 3 {
		t.Errorf("%d logins, want 3", n)
	}
	var warned bool
	for _, e := range vt.hook.AllEntries() {
		warned = warned || (e.Message == "vault login failed" && e.Data[fieldRetryIn] != nil)
	}
	if !warned {
		t.Error("no warning for the failed login")
	}
}

func TestVaultCallFailsWhenNeverLoggedIn(t *testing.T) {
	f := newFakeVault(t)
	f.handle("PUT /v1/auth/approle/login", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		vaultRefuse(w, 500, "internal error")
	})
	vt := newVaultTest(t, f, appRoleAuth(t))
	vt.run(t)
	got := make(chan error, 1)
	go func() {
		_, err := vt.vc.Read(context.Background(), "kv/data/app")
		got <- err
	}()
	vt.clk.WaitTimer(t, epoch.Add(time.Second)) // the first login failed
	vt.clk.WaitTimer(t, epoch.Add(loginWait))
	vt.clk.Advance(loginWait)
	select {
	case err := <-got:
		if !errors.Is(err, errNotLoggedIn) || !strings.Contains(err.Error(), "status 500") {
			t.Errorf("error %v: want not logged in, with the login failure", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Read did not give up")
	}
}

func TestVaultResponseErrorIsOneLine(t *testing.T) {
	err := vaultError(fmt.Errorf("wrapped: %w", &api.ResponseError{
		HTTPMethod: "PUT", URL: "https://vault.internal:8200/v1/auth/approle/login?x=1", StatusCode: 400,
		Errors: []string{"invalid role or\nsecret ID"},
	}))
	want := "vault: PUT /v1/auth/approle/login: status 400: invalid role or secret ID"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if !isStatus(err, 400) || !isClientError(err) || isStatus(err, 403) {
		t.Error("classification lost")
	}
	if vaultError(nil) != nil {
		t.Error("nil must stay nil")
	}
}

func TestSourcesWithoutVault(t *testing.T) {
	for _, c := range []config.Credential{
		{Name: "gh", Source: config.SourceVaultKV, Path: "secret/data/gh", Field: "token"},
		{Name: "db", Source: config.SourceVaultLease, Path: "database/creds/app"},
	} {
		if _, err := (Sources{}).New(c); !errors.Is(err, ErrNoVault) || !errors.Is(err, ErrUnsupportedSource) {
			t.Errorf("%s: %v, want ErrNoVault", c.Source, err)
		}
	}
	if _, err := (Sources{}).Ref(config.Ref{Kind: config.RefVault, Name: "secret/data/x", Field: "y"}); !errors.Is(err, ErrNoVault) {
		t.Errorf("vault ref: %v", err)
	}
	src, err := (Sources{}).New(config.Credential{Name: "e", Source: config.SourceEnv, EnvName: "X"})
	if env, ok := src.(EnvSource); err != nil || !ok || env.Name != "X" {
		t.Errorf("env: %#v, %v", src, err)
	}
}

func TestSourcesWithVault(t *testing.T) {
	f := newFakeVault(t)
	vc := newVaultTest(t, f, tokenAuth(t)).vc
	s := Sources{Vault: vc}

	kv, err := s.New(config.Credential{Name: "gh", Source: config.SourceVaultKV, Path: "secret/data/gh", Field: "token"})
	if got, ok := kv.(*VaultKVSource); err != nil || !ok || got.Client != vc || got.Field != "token" {
		t.Errorf("vault-kv: %#v, %v", kv, err)
	}
	lease, err := s.New(config.Credential{Name: "db", Source: config.SourceVaultLease, Path: "database/creds/app", RevokeOld: true})
	if _, ok := lease.(*VaultLeaseSource); err != nil || !ok {
		t.Errorf("vault-lease: %#v, %v", lease, err)
	}
	if _, ok := lease.(Renewer); ok {
		t.Error("a lease without renew: true must not renew")
	}
	if _, ok := lease.(Revoker); !ok {
		t.Error("a lease source must revoke")
	}
	renewing, err := s.New(config.Credential{Name: "db", Source: config.SourceVaultLease, Path: "database/creds/app", Renew: true})
	if _, ok := renewing.(Renewer); err != nil || !ok {
		t.Errorf("renew: true: %#v, %v", renewing, err)
	}
	if _, err := s.New(config.Credential{Name: "x", Source: config.SourceVaultKV, Path: "p"}); err == nil {
		t.Error("vault-kv without a field accepted")
	}

	o, err := s.New(config.Credential{Name: "partner", Source: config.SourceOAuth2, TokenURL: "https://auth.example/token",
		ClientID: "c", ClientSecret: &config.Ref{Kind: config.RefVault, Name: "secret/data/partner", Field: "client_secret"}})
	if err != nil {
		t.Fatal(err)
	}
	secret, ok := o.(*OAuth2Source).ClientSecret.(*VaultKVSource)
	if !ok || secret.Path != "secret/data/partner" || secret.Field != "client_secret" || secret.Client != vc {
		t.Errorf("oauth2 client_secret: %#v", o.(*OAuth2Source).ClientSecret)
	}
}

func TestSourcesResolveVaultRef(t *testing.T) {
	f := newFakeVault(t)
	f.tokenLookup(0, false)
	f.handle("GET /v1/secret/data/partner", kvAnswer("client-secret-1", 3))
	vt := newVaultTest(t, f, tokenAuth(t))
	vt.run(t)
	got, err := Sources{Vault: vt.vc}.Resolve(context.Background(),
		config.Ref{Kind: config.RefVault, Name: "secret/data/partner", Field: "token"})
	if err != nil || got != "client-secret-1" {
		t.Errorf("Resolve = %q, %v", got, err)
	}
}

func TestNewVaultClientErrors(t *testing.T) {
	env := &config.Ref{Kind: config.RefEnv, Name: "X"}
	tests := []struct {
		name string
		cfg  *config.Vault
		want string
	}{
		{"nil", nil, "no vault configuration"},
		{"unknown method", &config.Vault{Auth: config.VaultAuth{Method: "ldap"}}, `unknown auth method "ldap"`},
		{"token without token", &config.Vault{Auth: config.VaultAuth{Method: "token"}}, "token is required"},
		{"approle without secret_id", &config.Vault{Auth: config.VaultAuth{Method: "approle", RoleID: env}}, "secret_id is required"},
		{"kubernetes without role", &config.Vault{Auth: config.VaultAuth{Method: "kubernetes"}}, "needs a role"},
		{"login from vault", &config.Vault{Auth: config.VaultAuth{Method: "token",
			Token: &config.Ref{Kind: config.RefVault, Name: "a", Field: "b"}}}, "without a vault client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVaultClient(tt.cfg, VaultOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestVaultRevokeOnlyOwnedToken(t *testing.T) {
	f := newFakeVault(t)
	f.appRoleLogins(0, false)
	f.handle("PUT /v1/auth/token/revoke-self", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		w.WriteHeader(http.StatusNoContent)
	})
	vt := newVaultTest(t, f, appRoleAuth(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- vt.vc.Run(ctx) }()
	eventually(t, "the login", func() bool { return vt.token() == "tok-1" })
	cancel()
	<-done
	if err := vt.vc.Revoke(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.tokensOf("PUT /v1/auth/token/revoke-self"); len(got) != 1 || got[0] != "tok-1" {
		t.Errorf("revoke-self calls: %q", got)
	}
	if vt.secrets.has("tok-1") || vt.secrets.has(testSecretID) {
		t.Error("revoked token and login secrets still registered")
	}

	f2 := newFakeVault(t)
	f2.tokenLookup(0, false)
	vt2 := newVaultTest(t, f2, tokenAuth(t))
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- vt2.vc.Run(ctx2) }()
	eventually(t, "the token", func() bool { return vt2.token() == testVaultToken })
	cancel2()
	<-done2
	if err := vt2.vc.Revoke(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f2.count("PUT /v1/auth/token/revoke-self"); n != 0 {
		t.Errorf("the operator's token was revoked (%d calls)", n)
	}
}
