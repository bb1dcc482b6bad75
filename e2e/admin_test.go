package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type credStatus struct {
	Name        string `json:"name"`
	Source      string `json:"source"`
	Version     uint64 `json:"version"`
	Fingerprint string `json:"fingerprint"`
	State       string `json:"state"`
	LastError   string `json:"last_error"`
	Rotations   uint64 `json:"rotations"`
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	adminToken := secretValue(t)
	tok1, tok2 := secretValue(t), secretValue(t)
	path := filepath.Join(dir, "tok")
	writeSecretFile(t, path, tok1)
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"admin:", "  listen: 127.0.0.1:0", "  token: env:SIDEKEY_ADMIN_TOKEN"},
		[]string{fileCred("tok", path)},
		[]route{{name: "a", prefix: "/a/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}),
		withEnv("SIDEKEY_ADMIN_TOKEN="+adminToken))
	waitOK(t, p, "/a/ready")

	// credential fetches /v1/credentials and returns the entry for tok.
	credential := func(t *testing.T) credStatus {
		t.Helper()
		code, body := p.admin(t, http.MethodGet, "/v1/credentials", "")
		if code != http.StatusOK {
			t.Fatalf("/v1/credentials = %d: %s", code, body)
		}
		var raw []map[string]any
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("/v1/credentials is not a JSON list: %v: %s", err, maskSecrets(string(body)))
		}
		var list []credStatus
		json.Unmarshal(body, &list)
		for i, e := range list {
			if e.Name != "tok" {
				continue
			}
			for _, k := range []string{"name", "source", "version", "fingerprint", "state", "issued_at", "expires_at", "next_refresh", "last_error", "rotations"} {
				if _, ok := raw[i][k]; !ok {
					t.Errorf("/v1/credentials entry has no %q", k)
				}
			}
			return e
		}
		t.Fatalf("/v1/credentials has no entry for tok: %s", maskSecrets(string(body)))
		return credStatus{}
	}
	rotate := func(t *testing.T, token string) (int, credStatus) {
		t.Helper()
		code, body := p.admin(t, http.MethodPost, "/v1/credentials/tok/rotate", token)
		var e credStatus
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &e); err != nil || e.Name != "tok" {
				t.Fatalf("rotate answered %q (%v), want the credential's entry", maskSecrets(string(body)), err)
			}
		}
		return code, e
	}

	t.Run("health", func(t *testing.T) {
		if code, body := p.admin(t, http.MethodGet, "/healthz", ""); code != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
			t.Errorf("/healthz = %d %q, want 200 ok", code, body)
		}
		if code, body := p.admin(t, http.MethodGet, "/readyz", ""); code != http.StatusOK {
			t.Errorf("/readyz = %d %q, want 200", code, body)
		}
	})

	t.Run("credentials list", func(t *testing.T) {
		e := credential(t)
		if e.Source != "file" || e.Version < 1 || e.Fingerprint == "" || e.State != "fresh" {
			t.Errorf("entry %+v, want source file, version >= 1, a fingerprint, state fresh", e)
		}
		if strings.Contains(e.Fingerprint, tok1) {
			t.Error("the fingerprint holds the value")
		}
	})

	t.Run("rotate needs the admin token", func(t *testing.T) {
		for _, tok := range []string{"", "wrong-token"} {
			if code, _ := rotate(t, tok); code != http.StatusUnauthorized {
				t.Errorf("rotate with token %q = %d, want 401", tok, code)
			}
		}
		if code, _ := p.admin(t, http.MethodPost, "/v1/credentials/nope/rotate", adminToken); code != http.StatusNotFound {
			t.Errorf("rotate of an unknown credential = %d, want 404", code)
		}
	})

	t.Run("rotate", func(t *testing.T) {
		before := credential(t)
		code, same := rotate(t, adminToken)
		if code != http.StatusOK {
			t.Fatalf("rotate with the token = %d, want 200", code)
		}
		if same.Version != before.Version || same.Fingerprint != before.Fingerprint {
			t.Errorf("a refresh yielding the same value made a new version: %+v -> %+v", before, same)
		}

		writeSecretFile(t, path, tok2)
		code, after := rotate(t, adminToken)
		if code != http.StatusOK {
			t.Fatalf("rotate with the token = %d, want 200", code)
		}
		if after.Version <= before.Version || after.Fingerprint == before.Fingerprint {
			t.Errorf("after a new value and rotate: %+v, want a higher version and a new fingerprint than %+v", after, before)
		}
		id := nextID()
		resp, _ := p.get(t, "/a/x", "X-Test-Id", id)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d after rotate", resp.StatusCode)
		}
		if seen, ok := up.byID(id); !ok || seen.Header.Get("Authorization") != "Bearer "+tok2 {
			t.Error("the upstream did not receive the rotated value")
		}
	})

	t.Run("audit line", func(t *testing.T) {
		// A request served with the credential: one that waitOK sent before
		// the file was first read got 503 and names no version.
		e, err := p.waitLog(10*time.Second, func(e map[string]any) bool {
			return e["msg"] == "request" && e["route"] == "a" && e["status"] == float64(http.StatusOK)
		})
		if err != nil {
			t.Fatalf("no audit line for a request served on route a: %v", err)
		}
		for _, k := range []string{"method", "path", "status", "duration_ms", "credential", "credential_version", "fingerprint", "upstream", "request_id"} {
			if _, ok := e[k]; !ok {
				t.Errorf("audit line has no %q: %s", k, maskSecrets(fmt.Sprint(e)))
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		code, body := p.admin(t, http.MethodGet, "/metrics", "")
		if code != http.StatusOK {
			t.Fatalf("/metrics = %d", code)
		}
		for _, m := range []string{"sidekey_requests_total", "sidekey_credential_rotations_total", "sidekey_credential_expiry_seconds"} {
			if !strings.Contains(string(body), m) {
				t.Errorf("/metrics has no %s", m)
			}
		}
	})
}
