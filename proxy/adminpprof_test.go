package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// /debug/pprof/ is there only when turned on, and then only with the admin
// token, also when no token is set at all.
func TestAdminPprof(t *testing.T) {
	a := &Admin{}
	base := startEventsAdmin(t, a, nil)
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const tok = "admin-token-for-pprof"
	a.SetToken(tok)
	if code, _ := get("/debug/pprof/", tok); code != 404 {
		t.Errorf("pprof off: %d, want 404", code)
	}
	a.SetPprof(true)
	for _, tc := range []struct {
		path, token string
		code        int
		has         string
	}{
		{"/debug/pprof/", "", 401, "unauthorized"},
		{"/debug/pprof/heap", "wrong", 401, "unauthorized"},
		{"/debug/pprof/", tok, 200, "goroutine"},
		{"/debug/pprof/goroutine?debug=1", tok, 200, "goroutine profile:"},
		{"/debug/pprof/heap?debug=1", tok, 200, "heap profile:"},
		{"/debug/pprof/cmdline", tok, 200, ""},
	} {
		code, body := get(tc.path, tc.token)
		if code != tc.code || !strings.Contains(body, tc.has) {
			t.Errorf("GET %s (token %q): %d %.80q, want %d with %q", tc.path, tc.token, code, body, tc.code, tc.has)
		}
	}
	a.SetToken("")
	if code, _ := get("/debug/pprof/", ""); code != 401 {
		t.Errorf("pprof on without any admin token: %d, want 401", code)
	}
	a.SetPprof(false)
	a.SetToken(tok)
	if code, _ := get("/debug/pprof/", tok); code != 404 {
		t.Errorf("pprof turned off again: %d, want 404", code)
	}
}
