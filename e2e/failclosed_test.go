package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wantUnavailable asserts a 503 credential_unavailable naming cred.
func wantUnavailable(t testing.TB, resp *http.Response, body []byte, cred string) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; body %q", resp.StatusCode, maskSecrets(string(body)))
	}
	m, err := jsonError(body)
	if err != nil {
		t.Fatal(err)
	}
	if m["error"] != "credential_unavailable" || m["credential"] != cred {
		t.Fatalf("body %q, want error credential_unavailable naming %q", body, cred)
	}
}

func TestFailClosed(t *testing.T) {
	t.Parallel()

	t.Run("missing file recovers", func(t *testing.T) {
		t.Parallel()
		dir := dataDir(t)
		path := filepath.Join(dir, "token")
		up := newUpstream(t, nil)
		p := startSidekey(t, configYAML(nil,
			[]string{fileCred("missing", path)},
			[]route{{name: "fc", prefix: "/fc/", upstream: up.URL, strip: true, inject: "{credential: missing, as: bearer}"}}))

		for range 3 {
			resp, body := p.get(t, "/fc/x")
			wantUnavailable(t, resp, body, "missing")
		}
		if n := up.count(); n != 0 {
			t.Fatalf("upstream received %d requests without the credential", n)
		}
		code, body := p.admin(t, http.MethodGet, "/readyz", "")
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz = %d, want 503 while the credential is missing", code)
		}
		if !json.Valid(body) || !strings.Contains(string(body), "missing") {
			t.Errorf("/readyz body %q should be JSON naming the credential", body)
		}

		tok := secretValue(t)
		writeSecretFile(t, path, tok)
		waitOK(t, p, "/fc/x")
		eventually(t, 15*time.Second, "/readyz answers 200", func() error {
			if code, body := p.admin(t, http.MethodGet, "/readyz", ""); code != http.StatusOK {
				return fmt.Errorf("status %d: %s", code, body)
			}
			return nil
		})
		reqs := up.requests()
		if len(reqs) == 0 {
			t.Fatal("upstream saw nothing")
		}
		for _, r := range reqs {
			if r.Header.Get("Authorization") != "Bearer "+tok {
				t.Fatalf("upstream received a request without the credential: Authorization %q", maskSecrets(r.Header.Get("Authorization")))
			}
		}
	})

	t.Run("exec expiry", func(t *testing.T) {
		t.Parallel()
		cat, err := exec.LookPath("cat")
		if err != nil {
			t.Fatal(err)
		}
		dir := dataDir(t)
		expiredTok, soonTok := secretValue(t), secretValue(t)
		expiredJSON := filepath.Join(dir, "expired.json")
		soonJSON := filepath.Join(dir, "soon.json")
		writeTestFile(t, expiredJSON, fmt.Sprintf(`{"token": %q, "expires_at": "2001-01-01T00:00:00Z"}`, expiredTok))
		soon := time.Now().Add(5 * time.Second).Truncate(time.Second).Add(time.Second).UTC()
		writeTestFile(t, soonJSON, fmt.Sprintf(`{"token": %q, "expires_at": %q}`, soonTok, soon.Format(time.RFC3339)))

		upExpired := newUpstream(t, nil)
		upSoon := newUpstream(t, nil)
		p := startSidekey(t, configYAML(nil,
			[]string{
				execCred("expired", []string{cat, expiredJSON}, "refresh: 10m"),
				execCred("soon", []string{cat, soonJSON}, "refresh: 10m"),
			},
			[]route{
				{name: "expired", prefix: "/expired/", upstream: upExpired.URL, strip: true, inject: "{credential: expired, as: bearer}"},
				{name: "soon", prefix: "/soon/", upstream: upSoon.URL, strip: true, inject: "{credential: soon, as: bearer}"},
			}))

		for range 3 {
			resp, body := p.get(t, "/expired/x")
			wantUnavailable(t, resp, body, "expired")
		}
		if n := upExpired.count(); n != 0 {
			t.Fatalf("upstream received %d requests with an expired credential", n)
		}

		// Before expiry the value is served.
		served := false
		for !served && time.Now().Before(soon.Add(-500*time.Millisecond)) {
			resp, _ := p.get(t, "/soon/x")
			served = resp.StatusCode == http.StatusOK
			if !served {
				<-time.After(50 * time.Millisecond)
			}
		}
		if !served {
			t.Fatalf("the exec credential was never served before its expires_at (%v)", soon)
		}

		// Past expires_at (max_stale 0) every request is refused.
		<-time.After(time.Until(soon.Add(300 * time.Millisecond)))
		before := upSoon.count()
		for range 5 {
			resp, body := p.get(t, "/soon/x")
			wantUnavailable(t, resp, body, "soon")
		}
		if n := upSoon.count() - before; n != 0 {
			t.Fatalf("upstream received %d requests after the credential expired", n)
		}
		for _, r := range upSoon.requests() {
			// A request that took the value just before expiry may arrive
			// a moment later; nothing may arrive well past it.
			if r.At.After(soon.Add(250 * time.Millisecond)) {
				t.Errorf("a request reached the upstream at %v, after expires_at %v", r.At, soon)
			}
		}
	})
}
