package certs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	vaultapi "github.com/hashicorp/vault/api"
)

// fakeKV is a small in-memory stand-in for Vault's KV version 2 HTTP API
// (data read/write with check-and-set, metadata list and delete), for
// unit tests of VaultStorage. The storage's test against a real Vault
// lives in the e2e module.
type fakeKV struct {
	mount string
	mu    sync.Mutex
	keys  map[string]*kvKey
}

type kvKey struct {
	data    map[string]any
	version int
	created time.Time
}

func newFakeKV(t *testing.T, mount string) *vaultapi.Client {
	t.Helper()
	kv := &fakeKV{mount: mount, keys: map[string]*kvKey{}}
	srv := httptest.NewServer(kv)
	t.Cleanup(srv.Close)
	conf := vaultapi.DefaultConfig()
	conf.Address, conf.MaxRetries = srv.URL, 0
	c, err := vaultapi.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("test-token")
	return c
}

func (kv *fakeKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Vault-Token") != "test-token" {
		kvError(w, http.StatusForbidden, "permission denied")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/"+kv.mount+"/")
	if !ok {
		kvError(w, http.StatusNotFound, "no handler for route")
		return
	}
	kind, key, _ := strings.Cut(rest, "/")
	kv.mu.Lock()
	defer kv.mu.Unlock()
	switch {
	case kind == "data" && r.Method == http.MethodGet:
		kv.read(w, key)
	case kind == "data" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		kv.write(w, r, key)
	case kind == "metadata" && r.Method == http.MethodGet && r.URL.Query().Get("list") == "true":
		kv.list(w, key)
	case kind == "metadata" && r.Method == http.MethodDelete:
		delete(kv.keys, key)
		w.WriteHeader(http.StatusNoContent)
	default:
		kvError(w, http.StatusMethodNotAllowed, "unsupported operation")
	}
}

func (kv *fakeKV) read(w http.ResponseWriter, key string) {
	k := kv.keys[key]
	if k == nil {
		kvError(w, http.StatusNotFound)
		return
	}
	kvJSON(w, map[string]any{"data": map[string]any{"data": k.data, "metadata": map[string]any{
		"version": k.version, "created_time": k.created.Format(time.RFC3339Nano), "deletion_time": "", "destroyed": false}}})
}

func (kv *fakeKV) write(w http.ResponseWriter, r *http.Request, key string) {
	var body struct {
		Data    map[string]any `json:"data"`
		Options struct {
			CAS *int `json:"cas"`
		} `json:"options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Data == nil {
		kvError(w, http.StatusBadRequest, "no data provided")
		return
	}
	k := kv.keys[key]
	cur := 0
	if k != nil {
		cur = k.version
	}
	if body.Options.CAS != nil && *body.Options.CAS != cur {
		kvError(w, http.StatusBadRequest, "check-and-set parameter did not match the current version")
		return
	}
	kv.keys[key] = &kvKey{data: body.Data, version: cur + 1, created: time.Now()}
	kvJSON(w, map[string]any{"data": map[string]any{"version": cur + 1}})
}

func (kv *fakeKV) list(w http.ResponseWriter, dir string) {
	dir = strings.TrimSuffix(dir, "/")
	seen := map[string]bool{}
	for k := range kv.keys {
		rel, ok := strings.CutPrefix(k, dir+"/")
		if dir == "" {
			rel, ok = k, true
		}
		if !ok {
			continue
		}
		if first, _, more := strings.Cut(rel, "/"); more {
			seen[first+"/"] = true
		} else {
			seen[rel] = true
		}
	}
	if len(seen) == 0 {
		kvError(w, http.StatusNotFound)
		return
	}
	var keys []string
	for k := range seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	kvJSON(w, map[string]any{"data": map[string]any{"keys": keys}})
}

func kvJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func kvError(w http.ResponseWriter, code int, msgs ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if msgs == nil {
		msgs = []string{}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": msgs})
}

func newTestVaultStorage(t *testing.T, c *vaultapi.Client, path string) *VaultStorage {
	t.Helper()
	s, err := NewVaultStorage(VaultAPI(c), path)
	if err != nil {
		t.Fatal(err)
	}
	s.pollMin = 10 * time.Millisecond
	return s
}

func TestVaultStorage(t *testing.T) {
	testStorageContract(t, func(t *testing.T) certmagic.Storage {
		return newTestVaultStorage(t, newFakeKV(t, "secret"), "secret/data/sidekey/acme")
	})
}

func TestVaultStorageLayout(t *testing.T) {
	ctx := context.Background()
	c := newFakeKV(t, "kv")
	s := newTestVaultStorage(t, c, "kv/sidekey/acme") // without data/: inserted after the mount
	if err := s.Store(ctx, "certificates/ca/x.test/x.test.crt", []byte("pem")); err != nil {
		t.Fatal(err)
	}
	sec, err := c.Logical().Read("kv/data/sidekey/acme/certificates/ca/x.test/x.test.crt")
	if err != nil || sec == nil {
		t.Fatalf("reading the stored key from KV: %v", err)
	}
	if v := sec.Data["data"].(map[string]any)["value"]; v != "cGVt" {
		t.Fatalf("stored value = %v, want base64 of the bytes", v)
	}
	if err := s.Lock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
	defer s.Unlock(ctx, "issue_cert_x.test")
	got, err := s.List(ctx, ".", false)
	if err != nil || !slices.Equal(got, []string{"certificates"}) {
		t.Fatalf("List of the root = %v, %v; the lock entries must not show", got, err)
	}
	for _, bad := range []string{"", "/"} {
		if _, err := NewVaultStorage(VaultAPI(c), bad); err == nil {
			t.Errorf("NewVaultStorage(%q) succeeded", bad)
		}
	}
	if _, err := NewVaultStorage(nil, "kv/x"); err == nil {
		t.Error("NewVaultStorage without a client succeeded")
	}
}

// TestVaultStorageLockAcrossReplicas: two storages on one KV exclude each
// other, and a holder that stops refreshing its lock (a crash) loses it
// once the TTL has passed.
func TestVaultStorageLockAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	c := newFakeKV(t, "secret")
	a := newTestVaultStorage(t, c, "secret/data/acme")
	b := newTestVaultStorage(t, c, "secret/data/acme")
	a.lockTTL = 300 * time.Millisecond

	if ok, err := a.TryLock(ctx, "issue_cert_x.test"); !ok || err != nil {
		t.Fatalf("a.TryLock = %v, %v", ok, err)
	}
	// While a refreshes its entry, b cannot take the lock, even well past
	// the TTL.
	short, cancel := context.WithTimeout(ctx, 3*a.lockTTL)
	defer cancel()
	if err := b.Lock(short, "issue_cert_x.test"); err == nil {
		t.Fatal("b took a lock a holds and refreshes")
	}
	// a crashes: its refreshes stop, nothing is released.
	a.mu.Lock()
	h := a.held["issue_cert_x.test"]
	delete(a.held, "issue_cert_x.test")
	a.mu.Unlock()
	close(h.stop)
	<-h.done
	start := time.Now()
	if err := b.Lock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > waitLimit {
		t.Fatalf("takeover took %v", waited)
	}
	// a's stale entry is gone: a refresh or release by a fails its
	// check-and-set instead of stealing b's lock.
	if err := a.refresh(ctx, "issue_cert_x.test", h); !isCASMismatch(err) {
		t.Fatalf("refresh by the crashed holder: %v, want a check-and-set mismatch", err)
	}
	if ok, _ := a.TryLock(ctx, "issue_cert_x.test"); ok {
		t.Fatal("a took the lock b holds")
	}
	if err := b.RenewLockLease(ctx, "issue_cert_x.test", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.TryLock(ctx, "issue_cert_x.test"); !ok || err != nil {
		t.Fatalf("a.TryLock after b released = %v, %v", ok, err)
	}
	if err := a.Unlock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
}

func TestKVPaths(t *testing.T) {
	for _, tc := range []struct{ in, mount, prefix string }{
		{"secret/data/sidekey/acme", "secret", "sidekey/acme"},
		{"secret/sidekey/acme", "secret", "sidekey/acme"},
		{"/secret/data/sidekey/acme/", "secret", "sidekey/acme"},
		{"team/kv/data/acme", "team/kv", "acme"},
		{"secret", "secret", ""},
		{"secret/data", "secret", ""},
	} {
		m, p, err := kvPaths(tc.in)
		if err != nil || m != tc.mount || p != tc.prefix {
			t.Errorf("kvPaths(%q) = %q, %q, %v; want %q, %q", tc.in, m, p, err, tc.mount, tc.prefix)
		}
	}
}
