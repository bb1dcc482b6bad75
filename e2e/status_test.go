package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// statusRows parses `sidekey status` output: the header's columns and,
// per credential, its whitespace-separated fields.
func statusRows(t testing.TB, out string) (header []string, rows map[string][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 {
		t.Fatal("empty output")
	}
	header = strings.Fields(lines[0])
	rows = map[string][]string{}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	return header, rows
}

// TestStatusCommand runs `sidekey status` and `sidekey rotate` against a
// running proxy's admin API: the table, the JSON, and a forced rotation
// that needs the admin token.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	adminToken := secretValue(t)
	alphaPath := filepath.Join(dir, "alpha")
	writeSecretFile(t, alphaPath, secretValue(t))
	betaJSON := filepath.Join(dir, "beta.json")
	betaOutput := func() string {
		return fmt.Sprintf(`{"token": %q, "expires_at": %q}`, secretValue(t),
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}
	writeTestFile(t, betaJSON, betaOutput())
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"admin:", "  listen: 127.0.0.1:0", "  token: env:SIDEKEY_ADMIN_TOKEN"},
		[]string{fileCred("alpha", alphaPath), execCred("beta", []string{cat, betaJSON}, "refresh: 1h")},
		[]route{
			{name: "a", prefix: "/a/", upstream: up.URL, strip: true, inject: "{credential: alpha, as: bearer}"},
			{name: "b", prefix: "/b/", upstream: up.URL, strip: true, inject: "{credential: beta, as: bearer}"},
		}),
		withEnv("SIDEKEY_ADMIN_TOKEN="+adminToken))
	waitOK(t, p, "/a/ready")
	waitOK(t, p, "/b/ready")
	withToken := []procOption{withEnv("SIDEKEY_ADMIN_TOKEN=" + adminToken)}

	t.Run("table", func(t *testing.T) {
		r := runSidekey(t, nil, "status", "--admin", p.AdminURL)
		if r.code != 0 {
			t.Fatalf("sidekey status exited %d: %s", r.code, maskSecrets(r.stderr))
		}
		header, rows := statusRows(t, r.stdout)
		want := []string{"NAME", "SOURCE", "VERSION", "STATE", "EXPIRES", "IN", "ROTATIONS", "LAST", "ERROR"}
		if !slices.Equal(header, want) {
			t.Errorf("header %q, want %q", header, want)
		}
		for name, source := range map[string]string{"alpha": "file", "beta": "exec"} {
			row := rows[name]
			if len(row) < 4 {
				t.Errorf("no row for %s in:\n%s", name, maskSecrets(r.stdout))
				continue
			}
			if row[1] != source || row[2] != "1" || row[3] != "fresh" {
				t.Errorf("row %q, want source %s, version 1, state fresh", row, source)
			}
		}
		if row := rows["alpha"]; len(row) > 4 && row[4] != "never" {
			t.Errorf("alpha expires in %q, want never (a file value does not expire)", row[4])
		}
	})

	t.Run("json", func(t *testing.T) {
		r := runSidekey(t, nil, "status", "--json", "--admin", p.AdminURL)
		if r.code != 0 {
			t.Fatalf("sidekey status --json exited %d: %s", r.code, maskSecrets(r.stderr))
		}
		var list []credStatus
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
			t.Fatalf("sidekey status --json is not JSON: %v: %s", err, maskSecrets(r.stdout))
		}
		var names []string
		for _, e := range list {
			names = append(names, e.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"alpha", "beta"}) {
			t.Errorf("--json lists %q, want alpha and beta", names)
		}
	})

	t.Run("rotate", func(t *testing.T) {
		writeTestFile(t, betaJSON, betaOutput())
		before := credentialOf(t, p, "beta")

		r := runSidekey(t, nil, "rotate", "beta", "--admin", p.AdminURL)
		if r.code == 0 || !strings.Contains(r.stderr, "401") {
			t.Errorf("sidekey rotate without SIDEKEY_ADMIN_TOKEN exited %d with %q, want an error naming 401", r.code, maskSecrets(r.stderr))
		}
		if got := credentialOf(t, p, "beta"); got.Version != before.Version {
			t.Errorf("a refused rotate changed the version %d -> %d", before.Version, got.Version)
		}

		r = runSidekey(t, withToken, "rotate", "beta", "--admin", p.AdminURL)
		if r.code != 0 {
			t.Fatalf("sidekey rotate exited %d: %s", r.code, maskSecrets(r.stderr))
		}
		after := credentialOf(t, p, "beta")
		if after.Version != before.Version+1 || after.Fingerprint == before.Fingerprint {
			t.Errorf("after rotate: version %d fingerprint %s, want version %d and a new fingerprint",
				after.Version, after.Fingerprint, before.Version+1)
		}
		_, rows := statusRows(t, r.stdout)
		if row := rows["beta"]; len(row) < 3 || row[2] != fmt.Sprint(after.Version) {
			t.Errorf("sidekey rotate printed %q, want a row for beta with version %d", maskSecrets(r.stdout), after.Version)
		}

		if r := runSidekey(t, withToken, "rotate", "nope", "--admin", p.AdminURL); r.code == 0 {
			t.Error("sidekey rotate of an unknown credential exited 0")
		}
	})
}

// TestDegradedReadiness deletes a file credential's file and forces a
// refresh: the refresh fails but the value it holds never expires, so the
// proxy stays ready, reports the credential under "degraded", keeps
// serving, and counts the failure; a new file clears it. A credential that
// never loaded makes /readyz 503 naming it.
func TestDegradedReadiness(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	path := filepath.Join(dir, "deg")
	writeSecretFile(t, path, secretValue(t))
	up := newUpstream(t, nil)

	t.Run("degraded", func(t *testing.T) {
		p := startSidekey(t, configYAML(nil,
			[]string{fileCred("deg", path)},
			[]route{{name: "d", prefix: "/d/", upstream: up.URL, strip: true, inject: "{credential: deg, as: bearer}"}}))
		waitOK(t, p, "/d/ready")
		if code, r := readyz(t, p); code != http.StatusOK || !r.Ready || len(r.Degraded) > 0 {
			t.Fatalf("/readyz = %d %+v before the failure, want 200 ready and nothing degraded", code, r)
		}
		failures := scrape(t, p).must(t, "sidekey_credential_rotations_total", "credential", "deg", "result", "failure")

		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if code, body := p.admin(t, http.MethodPost, "/v1/credentials/deg/rotate", ""); code == http.StatusOK {
			t.Fatalf("rotate of a deleted file = 200, want an error: %s", maskSecrets(string(body)))
		}
		code, r := readyz(t, p)
		if code != http.StatusOK || !r.Ready {
			t.Fatalf("/readyz = %d %+v, want 200 ready: the value never expires", code, r)
		}
		if len(r.Degraded) != 1 || r.Degraded[0].Credential != "deg" || r.Degraded[0].LastError == "" {
			t.Errorf("/readyz degraded %+v, want one entry naming deg with its last error", r.Degraded)
		}
		if v := scrape(t, p).must(t, "sidekey_credential_rotations_total", "credential", "deg", "result", "failure"); v <= failures {
			t.Errorf("rotations failure = %v, want more than %v", v, failures)
		}
		if resp, body := p.get(t, "/d/x"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /d/x while degraded = %d: %s", resp.StatusCode, maskSecrets(string(body)))
		}

		writeSecretFile(t, path, secretValue(t))
		eventually(t, 10*time.Second, "a new file clears the degraded entry", func() error {
			if code, r := readyz(t, p); code != http.StatusOK || len(r.Degraded) > 0 {
				return fmt.Errorf("/readyz = %d %+v", code, r)
			}
			return nil
		})
	})

	t.Run("not ready", func(t *testing.T) {
		p := startSidekey(t, configYAML(nil,
			[]string{fileCred("deg", path), fileCred("absent", filepath.Join(dir, "absent"))},
			[]route{
				{name: "d", prefix: "/d/", upstream: up.URL, strip: true, inject: "{credential: deg, as: bearer}"},
				{name: "x", prefix: "/x/", upstream: up.URL, strip: true, inject: "{credential: absent, as: bearer}"},
			}))
		waitOK(t, p, "/d/ready")
		code, r := readyz(t, p)
		if code != http.StatusServiceUnavailable || r.Ready {
			t.Fatalf("/readyz = %d %+v, want 503 not ready", code, r)
		}
		if len(r.NotReady) != 1 || r.NotReady[0].Credential != "absent" {
			t.Errorf("/readyz not_ready %+v, want one entry naming absent", r.NotReady)
		}
	})
}
