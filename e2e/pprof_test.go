package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminPprof: admin.pprof serves Go's profiles on the admin listener,
// to requests with the admin token only; validate refuses it without one.
func TestAdminPprof(t *testing.T) {
	t.Parallel()
	token := secretValue(t)
	p := startSidekey(t, configYAML([]string{"admin:", "  listen: 127.0.0.1:0", "  token: env:SIDEKEY_ADMIN_TOKEN", "  pprof: true"}, nil, nil),
		withEnv("SIDEKEY_ADMIN_TOKEN="+token))
	for _, tc := range []struct {
		path, token string
		code        int
		has         string
	}{
		{"/debug/pprof/", "", http.StatusUnauthorized, "unauthorized"},
		{"/debug/pprof/heap?debug=1", "not-the-token", http.StatusUnauthorized, "unauthorized"},
		{"/debug/pprof/", token, http.StatusOK, "goroutine"},
		{"/debug/pprof/heap?debug=1", token, http.StatusOK, "heap profile:"},
		{"/debug/pprof/goroutine?debug=2", token, http.StatusOK, "goroutine "},
	} {
		code, body := p.admin(t, http.MethodGet, tc.path, tc.token)
		if code != tc.code || !strings.Contains(string(body), tc.has) {
			t.Errorf("GET %s: %d %.100q, want %d with %q", tc.path, code, maskSecrets(string(body)), tc.code, tc.has)
		}
	}
	off := startSidekey(t, configYAML(nil, nil, nil))
	if code, _ := off.admin(t, http.MethodGet, "/debug/pprof/", ""); code != http.StatusNotFound {
		t.Errorf("without admin.pprof: %d, want 404", code)
	}

	cfg := filepath.Join(dataDir(t), "pprof.yaml")
	writeTestFile(t, cfg, "admin:\n  listen: 127.0.0.1:0\n  pprof: true\n")
	r := runSidekey(t, nil, "validate", "-c", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, cfg+":3: admin.pprof: needs admin.token") {
		t.Errorf("validate of pprof without a token: exit %d, %q", r.code, r.stderr)
	}
}
