package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/sidekey/sidekey/config"
)

func TestLeaseValue(t *testing.T) {
	tests := []struct {
		fields map[string]string
		want   string
	}{
		{map[string]string{"username": "u", "password": "p"}, "p"},
		{map[string]string{"access_key": "AK", "secret_key": "SK", "security_token": "ST"}, "SK"},
		{map[string]string{"certificate": "C", "private_key": "K", "token": "T"}, "T"},
		{map[string]string{"certificate": "C", "private_key": "K"}, "C"},
		{map[string]string{"token": "", "password": "p"}, "p"},
	}
	for _, tt := range tests {
		if got, err := leaseValue(tt.fields); err != nil || got != tt.want {
			t.Errorf("leaseValue(%v) = %q, %v; want %q", tt.fields, got, err, tt.want)
		}
	}
	_, err := leaseValue(map[string]string{"client_secret": "hunter2", "client_id": "id"})
	if err == nil || !strings.Contains(err.Error(), "client_id, client_secret") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v: want the field names, no value", err)
	}
}

func TestLeaseSecret(t *testing.T) {
	now := epoch
	sec, err := leaseSecret(&api.Secret{
		LeaseID: "aws/creds/app/abc", LeaseDuration: 900, Renewable: true,
		Data: map[string]any{"access_key": "AK", "secret_key": "SK", "security_token": "ST", "ttl": json.Number("900")},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := &Secret{
		Value:     "SK",
		Fields:    map[string]string{"access_key": "AK", "secret_key": "SK", "security_token": "ST"},
		IssuedAt:  now,
		ExpiresAt: now.Add(900 * time.Second),
		Handle:    &VaultLease{ID: "aws/creds/app/abc", Renewable: true, Duration: 900 * time.Second},
	}
	if !reflect.DeepEqual(sec, want) {
		t.Errorf("leaseSecret = %+v, want %+v", sec, want)
	}

	// A certificate issued without a lease expires with the certificate.
	exp := now.Add(time.Hour).Unix()
	sec, err = leaseSecret(&api.Secret{Data: map[string]any{
		"certificate": "CERT", "private_key": "KEY", "expiration": json.Number(fmt.Sprint(exp)),
	}}, now)
	if err != nil || !sec.ExpiresAt.Equal(time.Unix(exp, 0)) {
		t.Errorf("no lease: %+v, %v", sec, err)
	}

	if _, err := leaseSecret(&api.Secret{}, now); err == nil {
		t.Error("an answer without data accepted")
	}
}

func TestRenewedLease(t *testing.T) {
	sec := &Secret{Value: "p", Fields: map[string]string{"password": "p"}, IssuedAt: epoch, ExpiresAt: epoch.Add(time.Minute)}
	l := &VaultLease{ID: "database/creds/app/1", Renewable: true, Duration: time.Minute}
	now := epoch.Add(40 * time.Second)

	got, err := renewedLease(sec, l, &api.Secret{LeaseID: l.ID, LeaseDuration: 60, Renewable: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != "p" || !got.IssuedAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(time.Minute)) {
		t.Errorf("renewed %+v", got)
	}
	if h := got.Handle.(*VaultLease); h.AtMaxTTL || h.ID != l.ID || h.Duration != time.Minute {
		t.Errorf("handle %+v", h)
	}
	if sec.Handle != nil || !sec.IssuedAt.Equal(epoch) {
		t.Error("the renewed secret must be a copy")
	}

	got, err = renewedLease(sec, l, &api.Secret{LeaseID: l.ID, LeaseDuration: 20, Renewable: true}, now)
	if err != nil || !got.Handle.(*VaultLease).AtMaxTTL || !got.ExpiresAt.Equal(now.Add(20*time.Second)) {
		t.Errorf("capped renewal: %+v, %v", got, err)
	}
	for _, ttl := range []int{19, 0} {
		if _, err := renewedLease(sec, l, &api.Secret{LeaseID: l.ID, LeaseDuration: ttl}, now); !errors.Is(err, errLeaseAtMaxTTL) {
			t.Errorf("renewal granting %ds of 60s: %v, want a new lease at once", ttl, err)
		}
	}
}

func TestVaultLeaseRenewRevokeAndWrite(t *testing.T) {
	f := newFakeVault(t)
	f.tokenLookup(0, false)
	var issued map[string]any
	f.handle("PUT /v1/pki/issue/app", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		issued = body
		vaultReply(w, 200, map[string]any{"lease_id": "pki/issue/app/1", "lease_duration": 60, "renewable": true,
			"data": map[string]any{"certificate": "CERT", "private_key": "KEY", "ca_chain": []string{"CA"}}})
	})
	ttls := []int{60, 30}
	f.handle("PUT /v1/sys/leases/renew", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if body["lease_id"] != "pki/issue/app/1" || body["increment"] != json.Number("60") {
			vaultRefuse(w, 400, "bad renewal")
			return
		}
		ttl := ttls[0]
		ttls = ttls[1:]
		vaultReply(w, 200, map[string]any{"lease_id": "pki/issue/app/1", "lease_duration": ttl, "renewable": true})
	})
	var revoked any
	f.handle("PUT /v1/sys/leases/revoke", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		revoked = body["lease_id"]
		w.WriteHeader(http.StatusNoContent)
	})
	vt := newVaultTest(t, f, tokenAuth(t))
	vt.run(t)
	src := &RenewingVaultLeaseSource{&VaultLeaseSource{Client: vt.vc, Path: "pki/issue/app",
		Data: map[string]any{"common_name": "app.internal", "ttl": "60s"}, Clock: vt.clk}}
	ctx := context.Background()

	sec, err := src.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if issued["common_name"] != "app.internal" || sec.Value != "CERT" || sec.Fields["private_key"] != "KEY" {
		t.Errorf("issued with %v: %+v", issued, sec)
	}
	if _, ok := sec.Fields["ca_chain"]; ok {
		t.Error("a list is not a string field")
	}
	vt.clk.Advance(40 * time.Second)
	r1, err := src.Renew(ctx, sec)
	if err != nil || !r1.ExpiresAt.Equal(vt.clk.Now().Add(time.Minute)) {
		t.Fatalf("renew: %+v, %v", r1, err)
	}
	r2, err := src.Renew(ctx, r1)
	if err != nil || !r2.Handle.(*VaultLease).AtMaxTTL {
		t.Fatalf("capped renew: %+v, %v", r2, err)
	}
	if _, err := src.Renew(ctx, r2); !errors.Is(err, errLeaseAtMaxTTL) {
		t.Errorf("renew past the max TTL: %v", err)
	}
	if n := f.count("PUT /v1/sys/leases/renew"); n != 2 {
		t.Errorf("%d renewals sent, want 2", n)
	}
	notRenewable := *sec
	notRenewable.Handle = &VaultLease{ID: "x", Duration: time.Minute}
	if _, err := src.Renew(ctx, &notRenewable); !errors.Is(err, errLeaseNotRenewable) {
		t.Errorf("renew of a non-renewable lease: %v", err)
	}

	if err := src.Revoke(ctx, r2); err != nil || revoked != "pki/issue/app/1" {
		t.Errorf("revoke: %v, revoked %v", err, revoked)
	}
	if err := src.Revoke(ctx, &Secret{Value: "x"}); err != nil {
		t.Errorf("revoke without a lease: %v", err)
	}
}

// A holder with a renewing lease source renews on its timer and keeps the
// same version; it obtains a new lease once renewal is refused.
func TestHolderWithRenewingVaultLease(t *testing.T) {
	f := newFakeVault(t)
	f.tokenLookup(0, false)
	n := 0
	f.handle("GET /v1/database/creds/app", func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		n++
		vaultReply(w, 200, map[string]any{"lease_id": fmt.Sprint("database/creds/app/", n), "lease_duration": 60,
			"renewable": true, "data": map[string]any{"username": fmt.Sprint("u", n), "password": fmt.Sprint("p", n)}})
	})
	f.handle("PUT /v1/sys/leases/renew", func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		vaultRefuse(w, 400, "lease not found")
	})
	vt := newVaultTest(t, f, tokenAuth(t))
	vt.run(t)
	src := &RenewingVaultLeaseSource{&VaultLeaseSource{Client: vt.vc, Path: "database/creds/app", Clock: vt.clk}}
	h := &Holder{Name: "db", Source: src, Clock: vt.clk, RefreshBefore: config.RefreshBefore{Fraction: 1.0 / 3}}
	h.random = func() float64 { return 0 }
	start(t, h)
	eventually(t, "the first lease", func() bool { return acquireNumber(h) == 1 })
	// Refreshed when a third of 60s is left: renewal refused, new lease.
	vt.clk.WaitTimer(t, epoch.Add(40*time.Second))
	vt.clk.Advance(40 * time.Second)
	eventually(t, "the second lease", func() bool { return acquireNumber(h) == 2 })
	if got := f.count("PUT /v1/sys/leases/renew"); got != 1 {
		t.Errorf("%d renewals, want 1", got)
	}
}
