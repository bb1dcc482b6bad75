package vaulte2e

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	kv "github.com/hashicorp/vault-plugin-secrets-kv"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/builtin/logical/pki"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/vault"
)

// These tests run the built sidekey binary against the in-process Vault:
// the child process gets VAULT_ADDR and VAULT_CACERT, and its login
// material in files. Every test registers the secret values it sees
// (login material, KV values, lease data) with its hygiene, which fails
// the test if any of them appears in a log line (at debug level), an
// admin API answer or a file of its sidekey processes.

// ---- configuration ----

// vaultEnv writes Vault's CA certificate into the test's directory and
// returns the environment that points a sidekey process at tv.
func vaultEnv(t *testing.T, tv *testVault) []string {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "vault-ca.pem")
	must(t, os.WriteFile(ca, tv.cluster.CACertPEM, 0o644))
	return []string{"VAULT_ADDR=" + tv.root.Address(), "VAULT_CACERT=" + ca}
}

// secretFile writes value (with a trailing newline, as operators do) to a
// file of its own and returns its path.
func secretFile(t *testing.T, name, value string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	must(t, os.WriteFile(path, []byte(value+"\n"), 0o600))
	return path
}

// approleYAML is a vault section logging in with AppRole, the role_id and
// secret_id in files.
func approleYAML(t *testing.T, roleID, secretID string) string {
	rememberSecret(t, "the AppRole role_id", roleID)
	rememberSecret(t, "the AppRole secret_id", secretID)
	return fmt.Sprintf("vault:\n  auth:\n    method: approle\n    role_id: %q\n    secret_id: %q\n",
		"file:"+secretFile(t, "role_id", roleID), "file:"+secretFile(t, "secret_id", secretID))
}

// tokenYAML is a vault section with a token in a file.
func tokenYAML(t *testing.T, token string) string {
	rememberSecret(t, "the Vault token given to sidekey", token)
	return fmt.Sprintf("vault:\n  auth:\n    method: token\n    token: %q\n", "file:"+secretFile(t, "token", token))
}

// sidekeyYAML renders a configuration: loopback listeners on port 0,
// debug JSON logs with audit lines, then top (extra top-level lines), the
// vault section, the credentials and the routes.
func sidekeyYAML(vaultSection string, creds, routes []string, top ...string) string {
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:0\nshutdown_timeout: 10s\n")
	for _, l := range top {
		b.WriteString(l + "\n")
	}
	b.WriteString("admin:\n  listen: 127.0.0.1:0\n")
	b.WriteString("log:\n  level: debug\n  format: json\n  requests: true\n")
	b.WriteString(vaultSection)
	b.WriteString("credentials:\n")
	for _, c := range creds {
		b.WriteString(c)
	}
	b.WriteString("routes:\n")
	for _, r := range routes {
		b.WriteString(r)
	}
	return b.String()
}

// credYAML is one credential: its name and its lines.
func credYAML(name string, lines ...string) string {
	var b strings.Builder
	b.WriteString("  " + name + ":\n")
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// routeYAML is a route on /NAME/ (prefix stripped) to upstream, with a
// 30s timeout, injecting as inject (a YAML flow map).
func routeYAML(name, upstream, inject string) string {
	return fmt.Sprintf("  - name: %s\n    match: {path_prefix: /%s/}\n    upstream: %s\n    strip_prefix: true\n    inject: %s\n    timeout: 30s\n",
		name, name, upstream, inject)
}

// ---- upstreams and clients ----

// newUpstream starts an HTTP server on 127.0.0.1 running h.
func newUpstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// bearer is the token of an Authorization: Bearer header, or "".
func bearer(r *http.Request) string {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return tok
}

// waitOK polls GET path through p until it answers 200.
func waitOK(t *testing.T, p *sidekeyProc, path string) {
	t.Helper()
	var last string
	deadline := time.Now().Add(waitLimit)
	for {
		code, body, err := p.get(path)
		if err == nil && code == http.StatusOK {
			return
		}
		last = fmt.Sprintf("%d %v %s", code, err, p.hy.mask(string(body)))
		if time.Now().After(deadline) {
			t.Fatalf("GET %s did not answer 200 within %v; last: %s", path, waitLimit, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// traffic is a set of clients sending GET requests through sidekey in a
// loop (a few milliseconds apart) until halted; anything but 200 fails.
type traffic struct {
	ok, fail atomic.Int64
	mu       sync.Mutex
	failures []string
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

func startTraffic(t *testing.T, p *sidekeyProc, clients int, path string) *traffic {
	t.Helper()
	tr := &traffic{stop: make(chan struct{})}
	for range clients {
		tr.wg.Go(func() {
			for {
				select {
				case <-tr.stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				code, body, err := p.get(path)
				if err == nil && code == http.StatusOK {
					tr.ok.Add(1)
					continue
				}
				tr.fail.Add(1)
				tr.mu.Lock()
				if len(tr.failures) < 5 {
					tr.failures = append(tr.failures, fmt.Sprintf("%s: %d %v %s",
						time.Now().Format("15:04:05.000"), code, err, p.hy.mask(string(body))))
				}
				tr.mu.Unlock()
			}
		})
	}
	t.Cleanup(tr.halt)
	return tr
}

func (tr *traffic) halt() {
	tr.once.Do(func() { close(tr.stop) })
	tr.wg.Wait()
}

// check halts the clients and fails the test for any failed request.
func (tr *traffic) check(t *testing.T) {
	t.Helper()
	tr.halt()
	if tr.ok.Load() == 0 {
		t.Error("no request of the traffic succeeded")
	}
	if n := tr.fail.Load(); n > 0 {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		t.Errorf("%d of %d requests failed; first: %s", n, n+tr.ok.Load(), strings.Join(tr.failures, "; "))
	}
}

// randomValue is a fresh random secret value.
func randomValue(prefix string) string {
	b := make([]byte, 20)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// ---- Vault observations (with the root token) ----

// leases lists the IDs of the leases under prefix (e.g. "db/creds/app/").
func (tv *testVault) leases(t *testing.T, prefix string) []string {
	t.Helper()
	sec, err := tv.root.Logical().List("sys/leases/lookup/" + prefix)
	if err != nil {
		t.Fatalf("listing the leases under %s: %v", prefix, err)
	}
	if sec == nil {
		return nil
	}
	keys, _ := sec.Data["keys"].([]any)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, prefix+fmt.Sprint(k))
	}
	return out
}

// leaseExists looks a lease up; its expiry when it exists.
func (tv *testVault) leaseExists(id string) (time.Time, bool) {
	sec, err := tv.root.Sys().Lookup(id)
	if err != nil || sec == nil {
		return time.Time{}, false
	}
	exp, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(sec.Data["expire_time"]))
	return exp, true
}

// approleTokens looks up every live token created by an AppRole login.
func (tv *testVault) approleTokens(t *testing.T) []map[string]any {
	t.Helper()
	sec, err := tv.root.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatalf("listing token accessors: %v", err)
	}
	var out []map[string]any
	if sec == nil {
		return nil
	}
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		info, err := tv.root.Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": k})
		if err != nil || info == nil {
			continue
		}
		if info.Data["path"] == "auth/approle/login" {
			out = append(out, info.Data)
		}
	}
	return out
}

func number(v any) int64 {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return i
	case float64:
		return int64(n)
	}
	return 0
}

// ---- a database-like secrets engine ----

// dbEngine is a secrets engine in the style of database/creds: reading
// creds/NAME issues a fresh username and password under a renewable lease
// of ttl (max maxTTL), which Vault revokes through it. It records what it
// issued, renewed and revoked, so that an upstream can check credentials
// against it as a database would.
type dbEngine struct {
	ttl, maxTTL time.Duration

	mu    sync.Mutex
	creds []*dbCred
}

type dbCred struct {
	user, password string
	issued         time.Time
	renewals       int
	revoked        time.Time
}

const dbSecretType = "db_creds"

func (db *dbEngine) factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := &framework.Backend{
		BackendType: logical.TypeLogical,
		Secrets:     []*framework.Secret{{Type: dbSecretType, Renew: db.renew, Revoke: db.revoke}},
	}
	b.Paths = []*framework.Path{{
		Pattern: "creds/" + framework.GenericNameRegex("name"),
		Fields:  map[string]*framework.FieldSchema{"name": {Type: framework.TypeString}},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
					c := &dbCred{user: randomValue("v-app-")[:18], password: randomValue("pw-"), issued: time.Now()}
					db.mu.Lock()
					db.creds = append(db.creds, c)
					db.mu.Unlock()
					resp := b.Secret(dbSecretType).Response(
						map[string]any{"username": c.user, "password": c.password},
						map[string]any{"password": c.password})
					resp.Secret.TTL, resp.Secret.MaxTTL = db.ttl, db.maxTTL
					return resp, nil
				},
			},
		},
	}}
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func (db *dbEngine) byPassword(req *logical.Request) *dbCred {
	pw, _ := req.Secret.InternalData["password"].(string)
	for _, c := range db.creds {
		if c.password == pw {
			return c
		}
	}
	return nil
}

func (db *dbEngine) renew(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	c := db.byPassword(req)
	if c == nil || !c.revoked.IsZero() {
		return nil, fmt.Errorf("no such credential")
	}
	c.renewals++
	req.Secret.TTL, req.Secret.MaxTTL = db.ttl, db.maxTTL
	return &logical.Response{Secret: req.Secret}, nil
}

func (db *dbEngine) revoke(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if c := db.byPassword(req); c != nil && c.revoked.IsZero() {
		c.revoked = time.Now()
	}
	return nil, nil
}

// valid reports whether user and password are an issued, unrevoked pair.
func (db *dbEngine) valid(user, password string) bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, c := range db.creds {
		if c.user == user && c.password == password {
			return c.revoked.IsZero()
		}
	}
	return false
}

// issued returns a copy of what the engine has issued, oldest first.
func (db *dbEngine) issued() []dbCred {
	db.mu.Lock()
	defer db.mu.Unlock()
	out := make([]dbCred, len(db.creds))
	for i, c := range db.creds {
		out[i] = *c
	}
	return out
}

// remember registers every issued username and password with t's hygiene.
func (db *dbEngine) remember(t *testing.T) {
	for _, c := range db.issued() {
		rememberSecret(t, "a database lease's username", c.user)
		rememberSecret(t, "a database lease's password", c.password)
	}
}

// dbPolicy adds reading the database-like engine to sidekey's policy.
const dbPolicy = sidekeyPolicy + `
path "db/creds/*" { capabilities = ["read"] }
`

// startDBVault is startVault with the database-like engine mounted at db/
// (leases of ttl, at most maxTTL) and readable by the sidekey policy.
func startDBVault(t *testing.T, ttl, maxTTL time.Duration) (*testVault, *dbEngine) {
	t.Helper()
	db := &dbEngine{ttl: ttl, maxTTL: maxTTL}
	cluster := vault.NewTestCluster(t, &vault.CoreConfig{
		LogicalBackends:    map[string]logical.Factory{"kv": kv.Factory, "pki": pki.Factory, "db": db.factory},
		CredentialBackends: map[string]logical.Factory{"approle": approle.Factory},
	}, &vault.TestClusterOptions{HandlerFunc: vaulthttp.Handler, NumCores: 1, Logger: hclog.NewNullLogger()})
	cluster.Start()
	t.Cleanup(cluster.Cleanup)
	tv := &testVault{cluster: cluster, root: cluster.Cores[0].Client}
	sys := tv.root.Sys()
	must(t, sys.Mount("db", &api.MountInput{Type: "db"}))
	must(t, sys.Mount("pki", &api.MountInput{Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "1h"}}))
	must(t, sys.EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}))
	must(t, sys.PutPolicy("sidekey", dbPolicy))
	tv.write(t, "pki/root/generate/internal", map[string]any{"common_name": "sidekey test root", "ttl": "1h", "key_type": "ec"})
	tv.write(t, "pki/roles/sidekey", map[string]any{
		"allow_any_name": true, "ttl": "10s", "max_ttl": "1m", "generate_lease": true,
		"key_type": "ec", "key_bits": 256,
	})
	return tv, db
}

// ---- the tests ----

// AppRole login from role_id and secret_id files; a KV v2 value injected
// as a bearer token replaces whatever the app sent.
func TestBinaryAppRoleLoginKVInjected(t *testing.T) {
	tv := startVault(t)
	roleID, secretID := tv.appRole(t, "1m", "10m")
	value := randomValue("kv-")
	rememberSecret(t, "the KV value", value)
	tv.kvPut(t, "app", map[string]any{"token": value, "user": "svc-e2e"})

	var refused atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if bearer(r) != value {
			refused.Add(1)
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	})
	p := startSidekey(t, sidekeyYAML(approleYAML(t, roleID, secretID),
		[]string{credYAML("app", "source: vault-kv", "path: kv/data/app", "field: token", "refresh: 1m")},
		[]string{routeYAML("kv", up.URL, "{credential: app, as: bearer}")}),
		vaultEnv(t, tv)...)

	waitOK(t, p, "/kv/ready")
	code, body, err := p.get("/kv/with-app-header", "Authorization", "Bearer app-chosen-token")
	if err != nil || code != http.StatusOK {
		t.Fatalf("with the app's own Authorization: %d %v %s", code, err, p.hy.mask(string(body)))
	}
	if n := refused.Load(); n != 0 {
		t.Errorf("the upstream refused %d requests", n)
	}
	e := p.credential(t, "app")
	if e.Source != "vault-kv" || e.Version != 1 || e.State != "fresh" || e.LastError != "" {
		t.Errorf("/v1/credentials entry %+v, want vault-kv version 1 (the KV version), fresh", e)
	}
	if n := p.countLog("vault login"); n != 1 {
		t.Errorf("%d vault login lines, want 1", n)
	}
	if n := p.countLog("vault login failed"); n != 0 {
		t.Errorf("%d failed logins logged", n)
	}
}

// A new KV v2 version is served within two refresh periods of being
// written, three times over, while clients keep sending requests: none
// fails, and the admin API's version follows the KV version.
func TestBinaryKVRotationWithinTwoRefreshes(t *testing.T) {
	const refresh = time.Second
	tv := startVault(t)
	roleID, secretID := tv.appRole(t, "1m", "10m")
	var mu sync.Mutex
	cur, prev := randomValue("kv-"), ""
	rememberSecret(t, "a KV value", cur)
	tv.kvPut(t, "app", map[string]any{"token": cur})
	seen := map[string]time.Time{} // value -> first seen by the upstream

	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		mu.Lock()
		ok := tok == cur || (prev != "" && tok == prev)
		if _, dup := seen[tok]; ok && !dup {
			seen[tok] = time.Now()
		}
		mu.Unlock()
		if !ok {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	})
	p := startSidekey(t, sidekeyYAML(approleYAML(t, roleID, secretID),
		[]string{credYAML("app", "source: vault-kv", "path: kv/data/app", "field: token", "refresh: "+refresh.String())},
		[]string{routeYAML("kv", up.URL, "{credential: app, as: bearer}")}),
		vaultEnv(t, tv)...)
	waitOK(t, p, "/kv/ready")
	load := startTraffic(t, p, 4, "/kv/load")

	for version := uint64(2); version <= 4; version++ {
		next := randomValue("kv-")
		rememberSecret(t, "a KV value", next)
		mu.Lock()
		prev, cur = cur, next
		mu.Unlock()
		written := time.Now()
		tv.kvPut(t, "app", map[string]any{"token": next})
		limit := 2*refresh + 500*time.Millisecond
		within(t, limit, fmt.Sprintf("KV version %d served", version), func() bool {
			mu.Lock()
			_, served := seen[next]
			mu.Unlock()
			return served && p.credential(t, "app").Version == version
		})
		mu.Lock()
		t.Logf("KV version %d first reached the upstream %v after it was written", version, seen[next].Sub(written).Round(time.Millisecond))
		mu.Unlock()
		time.Sleep(300 * time.Millisecond) // traffic on the new version before the next rotation
	}
	load.check(t)
	if e := p.credential(t, "app"); e.Rotations != 4 || e.LastError != "" {
		t.Errorf("/v1/credentials entry %+v, want 4 rotations and no error", e)
	}
	if n := p.countLog("credential rotated"); n != 4 {
		t.Errorf("%d rotation lines, want 4 (the first value and three new versions)", n)
	}
}

// The AppRole token (TTL 3s, max 60s) is renewed across several of its
// TTLs while traffic flows and the KV value is re-read every second: no
// request fails, the one token from the one login is still alive after
// more than three TTLs, and the renewals are logged.
func TestBinaryAppRoleTokenRenewedUnderTraffic(t *testing.T) {
	const ttl = 3 * time.Second
	tv := startVault(t)
	roleID, secretID := tv.appRole(t, ttl.String(), "60s")
	value := randomValue("kv-")
	rememberSecret(t, "the KV value", value)
	tv.kvPut(t, "app", map[string]any{"token": value})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if bearer(r) != value {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	})
	p := startSidekey(t, sidekeyYAML(approleYAML(t, roleID, secretID),
		[]string{credYAML("app", "source: vault-kv", "path: kv/data/app", "field: token", "refresh: 1s")},
		[]string{routeYAML("kv", up.URL, "{credential: app, as: bearer}")}),
		vaultEnv(t, tv)...)
	waitOK(t, p, "/kv/ready")
	start := time.Now()
	load := startTraffic(t, p, 4, "/kv/load")
	time.Sleep(10 * time.Second)
	load.check(t)

	tokens := tv.approleTokens(t)
	if len(tokens) != 1 {
		t.Fatalf("%d live AppRole tokens, want the one from sidekey's one login", len(tokens))
	}
	created := time.Unix(number(tokens[0]["creation_time"]), 0)
	if age := time.Since(created); age < 3*ttl || created.After(start) {
		t.Errorf("the live token is %v old (created %v before the traffic); want the first token kept alive past three TTLs",
			age.Round(time.Second), start.Sub(created).Round(time.Second))
	}
	if left := number(tokens[0]["ttl"]); left <= 0 {
		t.Errorf("the token has %ds left", left)
	}
	t.Logf("%d token renewals logged; the token was created %v before the check", p.countLog("vault token renewed"),
		time.Since(created).Round(time.Second))
	if n := p.countLog("vault token renewed"); n < 3 {
		t.Errorf("%d \"vault token renewed\" lines in 10s with a %v TTL, want at least 3", n, ttl)
	}
	if n := p.countLog("vault login"); n != 1 {
		t.Errorf("%d logins, want 1: the token is renewed, not replaced", n)
	}
	for _, msg := range []string{"vault login failed", "vault token renewal failed", "credential fetch failed"} {
		if n := p.countLog(msg); n != 0 {
			t.Errorf("%d %q lines", n, msg)
		}
	}
	if e := p.credential(t, "app"); e.State != "fresh" || e.LastError != "" {
		t.Errorf("credential %+v, want fresh without error", e)
	}
}

// A database-like lease (TTL 6s, max 10s) is renewed while Vault allows,
// then replaced by a new lease; the superseded lease is revoked only
// after the last request holding it has finished, well before it would
// have expired, and no request is ever sent with a revoked credential.
func TestBinaryLeaseRenewedReplacedRevokedAfterRelease(t *testing.T) {
	tv, db := startDBVault(t, 6*time.Second, 10*time.Second)
	beforeScan(t, func() { db.remember(t) })

	holding := make(chan string, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseHeld := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseHeld)
	var refused atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || !db.valid(user, pass) {
			refused.Add(1)
			http.Error(w, "no such user", http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/hold" {
			holding <- pass
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	p := startSidekey(t, sidekeyYAML(tokenYAML(t, tv.token(t)),
		[]string{credYAML("db", "source: vault-lease", "path: db/creds/app", "renew: true", "revoke_old: true",
			"refresh_before: 4s")},
		[]string{routeYAML("db", up.URL, "{credential: db, as: basic}")}),
		vaultEnv(t, tv)...)
	waitOK(t, p, "/db/ready")
	if n := len(db.issued()); n != 1 {
		t.Fatalf("%d credentials issued at start, want 1", n)
	}

	// One request holds the first credential.
	held := make(chan string, 1)
	go func() {
		code, body, err := p.get("/db/hold")
		held <- fmt.Sprintf("%d %v %s", code, err, p.hy.mask(string(body)))
	}()
	var pass1 string
	select {
	case pass1 = <-holding:
	case <-time.After(waitLimit):
		t.Fatal("the held request did not reach the upstream")
	}
	first := db.issued()[0]
	if pass1 != first.password {
		t.Fatal("the held request does not carry the first credential")
	}
	ids := tv.leases(t, "db/creds/app/")
	if len(ids) != 1 {
		t.Fatalf("%d leases under db/creds/app/, want 1", len(ids))
	}
	lease1 := ids[0]

	load := startTraffic(t, p, 2, "/db/load")
	eventually(t, "the replacement lease", func() bool {
		return len(db.issued()) >= 2 && p.credential(t, "db").Version >= 2
	})
	if n := db.issued()[0].renewals; n < 1 {
		t.Errorf("the first lease was renewed %d times before its replacement, want at least 1", n)
	}
	exp, ok := tv.leaseExists(lease1)
	if !ok {
		t.Fatal("the superseded lease is gone while a request still holds it")
	}
	if !db.issued()[0].revoked.IsZero() {
		t.Fatal("the superseded credential was revoked while a request still holds it")
	}
	if left := time.Until(exp); left < time.Second {
		t.Fatalf("the superseded lease has only %v left: too little to tell revocation from expiry", left)
	}
	time.Sleep(300 * time.Millisecond)
	if _, ok := tv.leaseExists(lease1); !ok {
		t.Fatal("the superseded lease was revoked while a request still holds it")
	}
	if n := p.countLog("credential revoked"); n != 0 {
		t.Fatalf("%d revocations logged while the request is held", n)
	}

	released := time.Now()
	releaseHeld()
	select {
	case got := <-held:
		if !strings.HasPrefix(got, "200 ") {
			t.Errorf("the held request: %s, want 200", got)
		}
	case <-time.After(waitLimit):
		t.Fatal("the held request did not finish")
	}
	// Revoked by sidekey once released, not by Vault at the lease's end.
	within(t, time.Until(exp)-500*time.Millisecond, "revocation of the superseded lease before its expiry", func() bool {
		_, ok := tv.leaseExists(lease1)
		return !ok
	})
	if r := db.issued()[0].revoked; r.IsZero() || r.Before(released) || !r.Before(exp) {
		t.Errorf("the first credential was revoked at %v; the held request was released at %v, the lease would have expired at %v",
			r.Format(time.StampMilli), released.Format(time.StampMilli), exp.Format(time.StampMilli))
	} else {
		t.Logf("the superseded lease was revoked %v after the release, %v before its expiry; renewed %d times before its replacement",
			r.Sub(released).Round(time.Millisecond), exp.Sub(r).Round(time.Millisecond), db.issued()[0].renewals)
	}
	if _, err := p.waitLog(waitLimit, func(e map[string]any) bool {
		return e["msg"] == "credential revoked" && e["credential"] == "db" && e["reason"] == "superseded"
	}); err != nil {
		t.Errorf("no \"credential revoked\" line for the superseded lease: %v", err)
	}
	second := db.issued()[1]
	if !second.revoked.IsZero() {
		t.Error("the current credential was revoked")
	}
	load.check(t)
	if n := refused.Load(); n != 0 {
		t.Errorf("the upstream refused %d requests (a revoked or unknown credential)", n)
	}
}

// While Vault is sealed, a certificate lease (TTL 8s) keeps being served
// until it expires; then the route answers 503 credential_unavailable
// without calling the upstream; once Vault is unsealed sidekey recovers
// by itself.
func TestBinarySealedVaultServesUntilExpiryThenRecovers(t *testing.T) {
	tv := startVault(t)
	roleID, secretID := tv.appRole(t, "1h", "2h")
	var calls atomic.Int64
	var certs sync.Map
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		pemText := r.URL.Query().Get("cert")
		block, _ := pem.Decode([]byte(pemText))
		if block == nil {
			http.Error(w, "no certificate", http.StatusUnauthorized)
			return
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || cert.Subject.CommonName != "app.sidekey.test" {
			http.Error(w, "bad certificate", http.StatusUnauthorized)
			return
		}
		certs.Store(pemText, true)
		io.WriteString(w, "ok")
	})
	beforeScan(t, func() {
		certs.Range(func(k, _ any) bool { rememberSecret(t, "an issued certificate", k.(string)); return true })
	})
	p := startSidekey(t, sidekeyYAML(approleYAML(t, roleID, secretID),
		[]string{credYAML("cert", "source: vault-lease", "path: pki/issue/sidekey",
			"data: {common_name: app.sidekey.test, ttl: 8s}")},
		[]string{routeYAML("pki", up.URL, "{credential: cert, as: query, param: cert}")}),
		vaultEnv(t, tv)...)
	waitOK(t, p, "/pki/ready")
	e := p.credential(t, "cert")
	if e.Version != 1 || e.ExpiresAt.IsZero() {
		t.Fatalf("credential %+v, want version 1 with an expiry", e)
	}
	expiresAt := e.ExpiresAt
	if time.Until(expiresAt) < 5*time.Second {
		t.Fatalf("the certificate expires in %v already", time.Until(expiresAt))
	}

	tv.cluster.Cores[0].Seal(t)
	served := 0
	for time.Until(expiresAt) > 300*time.Millisecond {
		code, body, err := p.get("/pki/sealed")
		if err != nil || code != http.StatusOK {
			t.Fatalf("%v before expiry with Vault sealed: %d %v %s, want 200", time.Until(expiresAt).Round(time.Millisecond),
				code, err, p.hy.mask(string(body)))
		}
		served++
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(expiresAt) + 300*time.Millisecond)
	before := calls.Load()
	for range 5 {
		code, body, err := p.get("/pki/expired")
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("after expiry with Vault sealed: %d %v %s, want 503", code, err, p.hy.mask(string(body)))
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil || m["error"] != "credential_unavailable" || m["credential"] != "cert" {
			t.Fatalf("503 body %s, want credential_unavailable naming cert", p.hy.mask(string(body)))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := calls.Load() - before; n != 0 {
		t.Errorf("%d requests reached the upstream without a credential", n)
	}
	if e := p.credential(t, "cert"); !strings.Contains(e.LastError, "sealed") || e.State != "expired" {
		t.Errorf("while sealed: state %q, last error %q; want expired, an error naming the seal", e.State, e.LastError)
	}
	t.Logf("%d requests served between the seal and the expiry", served)

	unsealed := time.Now()
	tv.cluster.UnsealCores(t)
	var recovered bool
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, _, err := p.get("/pki/recovered"); err == nil && code == http.StatusOK {
			recovered = true
			break
		}
	}
	if !recovered {
		t.Fatalf("no 200 within 45s of the unseal; credential %+v", p.credential(t, "cert"))
	}
	t.Logf("recovered %v after the unseal", time.Since(unsealed).Round(time.Millisecond))
	if e := p.credential(t, "cert"); e.Version != 2 || e.State != "fresh" {
		t.Errorf("after recovery: %+v, want version 2, fresh", e)
	}
}

// revoke_on_exit: after SIGTERM the leases a sidekey process created are
// revoked, by sidekey itself (an operator's token is left alive), and an
// AppRole token of its own login is revoked too; with revoke_on_exit:
// false the leases survive the exit.
func TestBinaryRevokeOnExit(t *testing.T) {
	tv, db := startDBVault(t, time.Minute, 2*time.Minute)
	env := vaultEnv(t, tv)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || !db.valid(user, pass) {
			http.Error(w, "no such user", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	})
	certUp := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Query().Get("cert"), "-----BEGIN CERTIFICATE") {
			http.Error(w, "no certificate", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	})
	creds := []string{
		credYAML("db", "source: vault-lease", "path: db/creds/app", "renew: true", "revoke_old: true"),
		credYAML("cert", "source: vault-lease", "path: pki/issue/sidekey", "data: {common_name: app.sidekey.test, ttl: 1m}"),
	}
	routes := []string{
		routeYAML("db", up.URL, "{credential: db, as: basic}"),
		routeYAML("pki", certUp.URL, "{credential: cert, as: query, param: cert}"),
	}
	run := func(t *testing.T, vaultSection string, top ...string) {
		t.Helper()
		beforeScan(t, func() { db.remember(t) })
		p := startSidekey(t, sidekeyYAML(vaultSection, creds, routes, top...), env...)
		waitOK(t, p, "/db/ready")
		waitOK(t, p, "/pki/ready")
		if n, m := len(tv.leases(t, "db/creds/app/")), len(tv.leases(t, "pki/issue/sidekey/")); n != 1 || m != 1 {
			t.Fatalf("%d database and %d certificate leases while running, want 1 each", n, m)
		}
		p.stop(t)
	}
	revoked := func(t *testing.T) {
		t.Helper()
		for _, prefix := range []string{"db/creds/app/", "pki/issue/sidekey/"} {
			if ids := tv.leases(t, prefix); len(ids) != 0 {
				t.Errorf("%d leases under %s after the exit, want all revoked", len(ids), prefix)
			}
		}
		for _, c := range db.issued() {
			if c.revoked.IsZero() {
				t.Error("a database credential survived the exit")
			}
		}
	}

	t.Run("token", func(t *testing.T) {
		token := tv.token(t)
		run(t, tokenYAML(t, token))
		revoked(t)
		if _, err := tv.root.Auth().Token().Lookup(token); err != nil {
			t.Errorf("the operator's token was revoked: %v", err)
		}
	})
	t.Run("approle", func(t *testing.T) {
		roleID, secretID := tv.appRole(t, "5m", "10m")
		run(t, approleYAML(t, roleID, secretID))
		revoked(t)
		if n := len(tv.approleTokens(t)); n != 0 {
			t.Errorf("%d AppRole tokens alive after the exit, want sidekey's own revoked", n)
		}
	})
	t.Run("revoke_on_exit false", func(t *testing.T) {
		run(t, tokenYAML(t, tv.token(t)), "revoke_on_exit: false")
		if n, m := len(tv.leases(t, "db/creds/app/")), len(tv.leases(t, "pki/issue/sidekey/")); n != 1 || m != 1 {
			t.Errorf("%d database and %d certificate leases after the exit, want 1 each kept", n, m)
		}
	})
}
