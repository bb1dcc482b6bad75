package config

import (
	"strings"
	"testing"
)

// admin.pprof is off by default, and refused without an admin token:
// profiles are served only to requests with it.
func TestAdminPprof(t *testing.T) {
	cfg, err := Parse("ok.yaml", []byte("admin:\n  token: env:T\n  pprof: true\n"))
	if err != nil || !cfg.Admin.Pprof {
		t.Fatalf("pprof with a token: %+v, %v", cfg.Admin, err)
	}
	if cfg, err := Parse("ok.yaml", []byte("listen: 127.0.0.1:8080\n")); err != nil || cfg.Admin.Pprof {
		t.Errorf("default: pprof %v, %v; want off", cfg.Admin.Pprof, err)
	}
	if _, err := Parse("ok.yaml", []byte("admin:\n  pprof: false\n")); err != nil {
		t.Errorf("pprof: false without a token: %v", err)
	}
	for src, want := range map[string]string{
		"admin:\n  listen: 127.0.0.1:9901\n  pprof: true\n": "bad.yaml:3: admin.pprof: needs admin.token: profiles are served only to requests with it",
		"admin:\n  token: env:T\n  pprof: yes\n":            "bad.yaml:3: admin.pprof: expected true or false",
	} {
		if got := strings.Join(problemLines(t, src), "\n"); got != want {
			t.Errorf("%q: problems %q, want %q", src, got, want)
		}
	}
}
