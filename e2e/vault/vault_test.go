package vaulte2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// The AppRole token (TTL 4s, max 14s) is renewed ahead of expiry across
// several TTLs without a new login, then replaced by a login before its
// max TTL ends; no call is refused meanwhile.
func TestAppRoleLoginAndTokenRenewal(t *testing.T) {
	tv := startVault(t)
	roleID, secretID := tv.appRole(t, "4s", "14s")
	log, hook := newLogger()
	vc := runClient(t, tv, appRoleAuth(t, roleID, secretID), log)

	first := lookupSelf(t, vc)
	start := time.Now()
	tokens := []string{first.id}
	renewedAcrossTTLs := false
	var second tokenInfo
	for second.accessor == "" {
		if time.Since(start) > 20*time.Second {
			t.Fatal("no new login by 20s; the max TTL is 14s")
		}
		info := lookupSelf(t, vc)
		if left := time.Until(info.expires); info.refused || left <= 0 {
			for _, e := range hook.AllEntries() {
				t.Logf("+%v %s %v", e.Time.Sub(start).Round(time.Millisecond), e.Message, e.Data)
			}
			t.Fatalf("at +%v the token had %v left (refused: %v)", time.Since(start).Round(time.Millisecond), left, info.refused)
		}
		switch {
		case info.accessor == first.accessor && time.Since(start) > 9*time.Second:
			renewedAcrossTTLs = true
		case info.accessor != first.accessor:
			second = info
			tokens = append(tokens, info.id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !renewedAcrossTTLs {
		t.Error("the first token was not kept alive past two TTLs")
	}
	if n := count(hook, "vault token renewed"); n < 3 {
		t.Errorf("%d renewals logged, want at least 3", n)
	}
	if n := count(hook, "vault login"); n != 2 {
		t.Errorf("%d logins, want 2: one at start, one at the max TTL", n)
	}
	if n := count(hook, "vault login failed") + count(hook, "vault token renewal failed"); n != 0 {
		t.Errorf("%d failures logged", n)
	}
	assertLogsClean(t, hook, append(tokens, roleID, secretID)...)
}

// A new KV v2 version is served within two refresh periods; re-reading an
// unchanged version is no rotation; a vault: reference follows rotation.
func TestKVRotation(t *testing.T) {
	tv := startVault(t)
	token := tv.token(t)
	log, hook := newLogger()
	vc := runClient(t, tv, tokenAuth(t, token), log)
	tv.kvPut(t, "github", map[string]any{"token": "kv-secret-1", "user": "svc"})

	const every = 500 * time.Millisecond
	h := &injector.Holder{Name: "github", SourceName: config.SourceVaultKV, RefreshEvery: every, Log: log,
		Source: &injector.VaultKVSource{Client: vc, Path: "kv/github", Field: "token"}}
	run(t, "holder", h.Run)
	eventually(t, "the first version", func() bool { n, v := acquire(h); return n == 1 && v == "kv-secret-1" })

	tv.kvPut(t, "github", map[string]any{"token": "kv-secret-2", "user": "svc"})
	within(t, 2*every+250*time.Millisecond, "the new version", func() bool {
		n, v := acquire(h)
		return n == 2 && v == "kv-secret-2"
	})

	// Three more reads of version 2: still version 2, no rotation.
	rotations := h.Status().Rotations
	seen := map[time.Time]bool{}
	eventually(t, "three more reads", func() bool { seen[h.Status().NextRefresh] = true; return len(seen) > 3 })
	if n, _ := acquire(h); n != 2 || h.Status().Rotations != rotations {
		t.Errorf("version %d, rotations %d -> %d: an unchanged secret must not rotate", n, rotations, h.Status().Rotations)
	}

	// vault:PATH#FIELD, as an OAuth2 client_secret, reads the latest version.
	src, err := injector.Sources{Vault: vc}.New(config.Credential{Name: "partner", Source: config.SourceOAuth2,
		TokenURL: "https://auth.partner.test/token", ClientID: "sidekey",
		ClientSecret: &config.Ref{Kind: config.RefVault, Name: "kv/data/github", Field: "token"}})
	if err != nil {
		t.Fatal(err)
	}
	secret := src.(*injector.OAuth2Source).ClientSecret
	for _, want := range []string{"kv-secret-2", "kv-secret-3"} {
		tv.kvPut(t, "github", map[string]any{"token": want})
		got, err := secret.Fetch(context.Background())
		if err != nil || got.Value != want {
			t.Fatalf("client secret: %v, %v; want %s", got, err, want)
		}
	}
	assertLogsClean(t, hook, token, "kv-secret-1", "kv-secret-2", "kv-secret-3")
}

// A PKI certificate issued as a lease is replaced ahead of expiry (PKI
// leases are not renewable), and the superseded lease is revoked only once
// the last request holding it has released it.
func TestPKILeaseReplacedAndRevokedAfterRelease(t *testing.T) {
	tv := startVault(t)
	token := tv.token(t)
	log, hook := newLogger()
	vc := runClient(t, tv, tokenAuth(t, token), log)
	cred := config.Credential{Name: "mtls", Source: config.SourceVaultLease, Path: "pki/issue/sidekey",
		Data: map[string]any{"common_name": "app.sidekey.test", "ttl": "9s"}, Renew: true, RevokeOld: true}
	src, err := injector.Sources{Vault: vc}.New(cred)
	if err != nil {
		t.Fatal(err)
	}
	h := &injector.Holder{Name: cred.Name, SourceName: cred.Source, Source: src, RevokeOld: true,
		RevokeGrace: time.Minute, Log: log, RetryMin: 100 * time.Millisecond, RetryMax: time.Second}
	run(t, "holder", h.Run)

	eventually(t, "the first certificate", func() bool { n, _ := acquire(h); return n == 1 })
	held, err := h.Acquire() // a request in flight keeps version 1
	if err != nil {
		t.Fatal(err)
	}
	first := held.Secret()
	lease := first.Handle.(*injector.VaultLease)
	if lease.ID == "" || !strings.HasPrefix(first.Value, "-----BEGIN CERTIFICATE") || first.Fields["private_key"] == "" {
		t.Fatalf("lease %+v, value %.30q", lease, first.Value)
	}
	if _, err := tv.root.Sys().Lookup(lease.ID); err != nil {
		t.Fatalf("lookup of the live lease: %v", err)
	}

	eventually(t, "the replacement", func() bool { n, _ := acquire(h); return n == 2 })
	if time.Until(first.ExpiresAt) < time.Second {
		t.Fatalf("rotation came %v before expiry; too late to tell revocation from expiry", time.Until(first.ExpiresAt))
	}
	if _, err := tv.root.Sys().Lookup(lease.ID); err != nil {
		t.Fatalf("the superseded lease is gone while a request holds it: %v", err)
	}
	if n := count(hook, "credential revoked"); n != 0 {
		t.Fatalf("%d revocations before release", n)
	}

	held.Release()
	within(t, time.Until(first.ExpiresAt), "the revocation", func() bool {
		_, err := tv.root.Sys().Lookup(lease.ID)
		return err != nil
	})
	// Vault shows the lease gone before the holder's Revoke call returns
	// and logs it: wait for the line rather than race it.
	eventually(t, "the revocation log line", func() bool { return count(hook, "credential revoked") >= 1 })
	if n := count(hook, "credential revoked"); n != 1 {
		t.Errorf("%d revocations logged, want 1", n)
	}
	second, _ := h.Acquire()
	defer second.Release()
	assertLogsClean(t, hook, token, first.Value, first.Fields["private_key"],
		second.Secret().Value, second.Secret().Fields["private_key"])
}

// While Vault is sealed, the credential keeps serving until its own expiry,
// then is unavailable; the AppRole token expires meanwhile. Once Vault is
// unsealed the client logs in again and the credential comes back.
func TestSealedVaultKeepsServingUntilExpiryThenRecovers(t *testing.T) {
	tv := startVault(t)
	roleID, secretID := tv.appRole(t, "4s", "1m")
	log, hook := newLogger()
	vc := runClient(t, tv, appRoleAuth(t, roleID, secretID), log)
	first := lookupSelf(t, vc)
	src, err := injector.Sources{Vault: vc}.New(config.Credential{Name: "mtls", Source: config.SourceVaultLease,
		Path: "pki/issue/sidekey", Data: map[string]any{"common_name": "app.sidekey.test", "ttl": "6s"}})
	if err != nil {
		t.Fatal(err)
	}
	h := &injector.Holder{Name: "mtls", SourceName: config.SourceVaultLease, Source: src, Log: log,
		RetryMin: 100 * time.Millisecond, RetryMax: 500 * time.Millisecond}
	run(t, "holder", h.Run)
	eventually(t, "the first certificate", func() bool { n, _ := acquire(h); return n == 1 })
	v, _ := h.Acquire()
	expiresAt, cert := v.Secret().ExpiresAt, v.Secret().Value
	v.Release()

	tv.cluster.Cores[0].Seal(t)
	for time.Until(expiresAt) > 300*time.Millisecond {
		if n, _ := acquire(h); n != 1 {
			t.Fatalf("version %d while sealed, %v before expiry: want version 1 kept", n, time.Until(expiresAt))
		}
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, "expiry", func() bool {
		_, err := h.Acquire()
		return errors.Is(err, injector.ErrUnavailable)
	})
	if time.Now().Before(expiresAt) {
		t.Error("unavailable before expiry")
	}
	if st := h.Status(); !strings.Contains(st.LastError, "sealed") {
		t.Errorf("last error %q", st.LastError)
	}

	tv.cluster.UnsealCores(t)
	eventually(t, "recovery", func() bool { n, _ := acquire(h); return n == 2 })
	after := lookupSelf(t, vc)
	if after.accessor == first.accessor {
		t.Error("the token expired while sealed; want a new login")
	}
	assertLogsClean(t, hook, roleID, secretID, first.id, after.id, cert)
}
