package vaulte2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	kv "github.com/hashicorp/vault-plugin-secrets-kv"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/builtin/logical/pki"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/vault"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// waitLimit bounds every wait on something that should happen promptly.
const waitLimit = 15 * time.Second

// sidekeyPolicy is what sidekey's token needs: read KV, issue
// certificates, renew and revoke its leases. Token lookup, renewal and
// revocation of itself come with Vault's default policy.
const sidekeyPolicy = `
path "kv/data/*" { capabilities = ["read"] }
path "pki/issue/sidekey" { capabilities = ["update"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
`

// testVault is a one-core Vault with KV v2 at kv/, PKI at pki/ (a root CA
// and a role "sidekey" issuing short-lived certificates with leases),
// AppRole at approle/ and the policy "sidekey".
type testVault struct {
	cluster *vault.TestCluster
	root    *api.Client
}

func startVault(t *testing.T) *testVault {
	t.Helper()
	cluster := vault.NewTestCluster(t, &vault.CoreConfig{
		LogicalBackends:    map[string]logical.Factory{"kv": kv.Factory, "pki": pki.Factory},
		CredentialBackends: map[string]logical.Factory{"approle": approle.Factory},
	}, &vault.TestClusterOptions{HandlerFunc: vaulthttp.Handler, NumCores: 1, Logger: hclog.NewNullLogger()})
	cluster.Start()
	t.Cleanup(cluster.Cleanup)
	tv := &testVault{cluster: cluster, root: cluster.Cores[0].Client}

	sys := tv.root.Sys()
	must(t, sys.Mount("kv", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}))
	must(t, sys.Mount("pki", &api.MountInput{Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "1h"}}))
	must(t, sys.EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}))
	must(t, sys.PutPolicy("sidekey", sidekeyPolicy))
	tv.write(t, "pki/root/generate/internal", map[string]any{"common_name": "sidekey test root", "ttl": "1h", "key_type": "ec"})
	tv.write(t, "pki/roles/sidekey", map[string]any{
		"allow_any_name": true, "ttl": "10s", "max_ttl": "30s", "generate_lease": true,
		"key_type": "ec", "key_bits": 256,
	})
	// A KV v2 mount answers only once its upgrade has run.
	eventually(t, "the kv mount", func() bool {
		_, err := tv.root.Logical().Write("kv/data/probe", map[string]any{"data": map[string]any{"x": "y"}})
		return err == nil
	})
	return tv
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (tv *testVault) write(t *testing.T, path string, data map[string]any) *api.Secret {
	t.Helper()
	sec, err := tv.root.Logical().Write(path, data)
	if err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return sec
}

// kvPut writes a new version of kv/NAME.
func (tv *testVault) kvPut(t *testing.T, name string, data map[string]any) {
	t.Helper()
	tv.write(t, "kv/data/"+name, map[string]any{"data": data})
}

// token creates a token with the sidekey policy.
func (tv *testVault) token(t *testing.T) string {
	t.Helper()
	sec, err := tv.root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"sidekey"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	return sec.Auth.ClientToken
}

// appRole creates the AppRole role "sidekey" with the given token TTLs and
// returns its role_id and a secret_id.
func (tv *testVault) appRole(t *testing.T, ttl, maxTTL string) (roleID, secretID string) {
	t.Helper()
	tv.write(t, "auth/approle/role/sidekey", map[string]any{
		"token_ttl": ttl, "token_max_ttl": maxTTL, "token_policies": "sidekey",
	})
	sec, err := tv.root.Logical().Read("auth/approle/role/sidekey/role-id")
	if err != nil {
		t.Fatal(err)
	}
	roleID = sec.Data["role_id"].(string)
	secretID = tv.write(t, "auth/approle/role/sidekey/secret-id", nil).Data["secret_id"].(string)
	return roleID, secretID
}

// config is the vault section of a sidekey configuration for tv.
func (tv *testVault) config(auth config.VaultAuth) *config.Vault {
	return &config.Vault{Address: tv.root.Address(), CACert: tv.cluster.CACertPEMFile, Auth: auth}
}

// fileRef writes value to a file of its own and returns a file: reference.
func fileRef(t *testing.T, value string) *config.Ref {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &config.Ref{Kind: config.RefFile, Name: path}
}

func tokenAuth(t *testing.T, token string) config.VaultAuth {
	return config.VaultAuth{Method: "token", Token: fileRef(t, token)}
}

func appRoleAuth(t *testing.T, roleID, secretID string) config.VaultAuth {
	return config.VaultAuth{Method: "approle", Mount: "approle", RoleID: fileRef(t, roleID), SecretID: fileRef(t, secretID)}
}

// newLogger captures every line at debug level, before any redaction, so
// that the tests see what the code itself writes.
func newLogger() (*logrus.Logger, *test.Hook) {
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	return log, hook
}

// runClient builds a Vault client for tv and runs it until the test ends.
func runClient(t *testing.T, tv *testVault, auth config.VaultAuth, log logrus.FieldLogger) *injector.VaultClient {
	t.Helper()
	vc, err := injector.NewVaultClient(tv.config(auth), injector.VaultOptions{
		Log: log, RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "vault client", vc.Run)
	return vc
}

// run runs fn until the test ends.
func run(t *testing.T, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(waitLimit):
			t.Errorf("%s did not stop", what)
		}
	})
}

// eventually polls cond every 50ms until it holds or waitLimit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	within(t, waitLimit, what, cond)
}

// within polls cond every 50ms until it holds or d passes.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// tokenInfo is what lookup-self says of the client's current token.
type tokenInfo struct {
	id, accessor string
	// expires is Vault's expire_time of the token. Its ttl field is not
	// used: Vault truncates it to whole seconds after rounding the clock,
	// so it reads 0 while up to about 1.5s remain.
	expires time.Time
	// refused reports that Vault refused the token the client held, and
	// the lookup went through only after the client logged in again.
	refused bool
}

func lookupSelf(t *testing.T, vc *injector.VaultClient) tokenInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var info tokenInfo
	calls := 0
	err := vc.Do(ctx, func(c *api.Client) error {
		calls++
		sec, err := c.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return err
		}
		info.id, _ = sec.TokenID()
		info.accessor, _ = sec.TokenAccessor()
		exp, _ := sec.Data["expire_time"].(string)
		if info.expires, err = time.Parse(time.RFC3339Nano, exp); err != nil {
			return fmt.Errorf("expire_time %q: %w", exp, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("lookup-self: %v", err)
	}
	info.refused = calls > 1
	return info
}

// acquire returns the holder's current version number and secret value,
// or 0 and "" when it has none.
func acquire(h *injector.Holder) (uint64, string) {
	v, err := h.Acquire()
	if err != nil {
		return 0, ""
	}
	defer v.Release()
	return v.Number(), v.Secret().Value
}

// count is how many captured lines have the message.
func count(hook *test.Hook, msg string) int {
	n := 0
	for _, e := range hook.AllEntries() {
		if e.Message == msg {
			n++
		}
	}
	return n
}

// assertLogsClean fails when any captured line holds one of the values.
func assertLogsClean(t *testing.T, hook *test.Hook, values ...string) {
	t.Helper()
	entries := hook.AllEntries()
	if len(entries) == 0 {
		t.Error("no log lines captured")
	}
	for _, e := range entries {
		line, err := e.String()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if v != "" && strings.Contains(line, strings.TrimSpace(v)) {
				t.Errorf("a log line holds a secret: %q", line)
			}
		}
	}
}
