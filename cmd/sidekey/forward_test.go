package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sidekey/sidekey/config"
)

func TestForwardReloadable(t *testing.T) {
	fp := func(certOut string) *config.Config {
		return &config.Config{ForwardProxy: &config.ForwardProxy{Listen: "127.0.0.1:3128", CA: config.ForwardCA{CertOut: certOut}}}
	}
	moved := fp("/run/ca.pem")
	moved.ForwardProxy.Listen = "127.0.0.1:3129"
	moved.ForwardProxy.AllowTunnel = []string{"pypi.org"}
	for _, tc := range []struct {
		name     string
		old, new *config.Config
		refusal  string
	}{
		{"none", &config.Config{}, &config.Config{}, ""},
		{"unchanged", fp("/run/ca.pem"), fp("/run/ca.pem"), ""},
		{"listen and allow_tunnel", fp("/run/ca.pem"), moved, ""},
		{"added", &config.Config{}, fp("/run/ca.pem"), "forward_proxy: adding or removing it needs a restart"},
		{"removed", fp("/run/ca.pem"), &config.Config{}, "forward_proxy: adding or removing it needs a restart"},
		{"ca changed", fp("/run/ca.pem"), fp("/run/other.pem"), "forward_proxy.ca: a change needs a restart"},
	} {
		err := forwardReloadable(tc.old, tc.new)
		if (err == nil) != (tc.refusal == "") || err != nil && !strings.Contains(err.Error(), tc.refusal) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.refusal)
		}
	}
}

func TestNotIn(t *testing.T) {
	if got := notIn([]string{"a", "b", "c"}, []string{"b"}); !reflect.DeepEqual(got, []string{"a", "c"}) {
		t.Errorf("notIn = %q", got)
	}
	if got := notIn([]string{"a"}, []string{"a", "b"}); got != nil {
		t.Errorf("a subset: %q", got)
	}
}
