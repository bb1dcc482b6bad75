package proxy

import (
	"encoding/base64"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/sidekey/sidekey/config"
)

func TestHostAllowed(t *testing.T) {
	a := newAdmission(&config.Config{
		Routes:       []config.Route{{Host: "api.github.local"}, {PathPrefix: "/x/"}},
		TLS:          &config.TLS{ACME: &config.ACME{Domains: []string{"gw.example.com"}}},
		AllowedHosts: []string{"sidekey.internal", "*.svc.cluster.local"},
	})
	local := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 8080}
	for host, want := range map[string]bool{
		"":                           true, // HTTP/1.0 without Host
		"localhost":                  true,
		"LOCALHOST:8080":             true,
		"localhost.":                 true,
		"app.localhost":              true,
		"a.b.localhost:1":            true,
		"127.0.0.1":                  true,
		"127.0.0.1:8080":             true,
		"127.255.0.9":                true,
		"[::1]:8080":                 true,
		"[::ffff:127.0.0.1]":         true,
		"10.1.2.3:8080":              true, // the listener's own address
		"api.github.local":           true,
		"API.GitHub.Local:443":       true,
		"gw.example.com":             true,
		"sidekey.internal":           true,
		"db.svc.cluster.local":       true,
		"a.b.svc.cluster.local:80":   true,
		"svc.cluster.local":          false, // the wildcard is below the suffix only
		"rebind.attacker.example":    false,
		"localhost.attacker.example": false,
		"evillocalhost":              false,
		"10.1.2.4":                   false,
		"192.168.1.1:8080":           false,
		"0127.0.0.1":                 false,
		"127.0.0.1.attacker":         false,
		"[::2]":                      false,
		"github.local":               false,
	} {
		if got := a.hostAllowed([]byte(host), local); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
	// A unix socket has no address of its own to match.
	if a.hostAllowed([]byte("10.1.2.3"), &net.UnixAddr{Name: "/s", Net: "unix"}) {
		t.Error("an address admitted on a unix socket")
	}
}

func TestParseHostIPAgreesWithNetip(t *testing.T) {
	for _, s := range []string{"1.2.3.4", "0.0.0.0", "255.255.255.255", "256.1.1.1", "1.2.3", "1.2.3.4.5",
		"01.2.3.4", "1.2.3.04", "1..3.4", "", "a.b.c.d", "1.2.3.4 ", "::1", "::ffff:1.2.3.4", "1234.1.1.1"} {
		checkHostIP(t, s)
	}
}

func FuzzParseHostIP(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "1.2.3.04", "300.1.1.1"} {
		f.Add(s)
	}
	f.Fuzz(checkHostIP)
}

func checkHostIP(t *testing.T, s string) {
	got, ok := parseHostIP([]byte(s))
	want, err := netip.ParseAddr(s)
	if ok != (err == nil) || ok && got != want.Unmap() {
		t.Errorf("parseHostIP(%q) = %v %v; netip: %v %v", s, got, ok, want, err)
	}
}

func TestCrossOrigin(t *testing.T) {
	a := newAdmission(&config.Config{AllowedOrigins: []string{"https://app.example.com", "http://localhost:3000"}})
	for _, tc := range []struct {
		origin, site, host string
		tls, want          bool
	}{
		{"", "", "127.0.0.1:8080", false, false},
		{"", "none", "127.0.0.1:8080", false, false},        // typed in the address bar
		{"", "same-origin", "127.0.0.1:8080", false, false}, // a page sidekey served
		{"", "cross-site", "127.0.0.1:8080", false, true},
		{"", "same-site", "127.0.0.1:8080", false, true}, // another port of localhost is same-site
		{"", "Cross-Site", "127.0.0.1:8080", false, true},
		{"https://evil.example", "", "127.0.0.1:8080", false, true},
		{"https://evil.example", "cross-site", "127.0.0.1:8080", false, true},
		{"null", "", "127.0.0.1:8080", false, true}, // sandboxed frames, file: pages
		{"http://127.0.0.1:8080", "same-origin", "127.0.0.1:8080", false, false},
		{"http://127.0.0.1", "", "127.0.0.1:80", false, false},
		{"https://127.0.0.1:8080", "", "127.0.0.1:8080", false, true}, // another scheme
		{"http://127.0.0.1:8081", "", "127.0.0.1:8080", false, true},  // another port
		{"https://gw.example.com", "", "gw.example.com:443", true, false},
		{"http://gw.example.com", "", "gw.example.com", true, true},
		{"https://app.example.com", "cross-site", "127.0.0.1:8080", false, false}, // allowed
		{"HTTPS://APP.EXAMPLE.COM", "cross-site", "127.0.0.1:8080", false, false},
		{"http://localhost:3000", "same-site", "localhost:8080", false, false},
		{"http://localhost:3001", "same-site", "localhost:8080", false, true},
	} {
		if got := a.crossOrigin([]byte(tc.origin), []byte(tc.site), []byte(tc.host), tc.tls); got != tc.want {
			t.Errorf("crossOrigin(origin %q, site %q, host %q, tls %v) = %v, want %v",
				tc.origin, tc.site, tc.host, tc.tls, got, tc.want)
		}
	}
}

func TestProxyAuthToken(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for v, want := range map[string]string{
		"Bearer tok-1":                    "tok-1",
		"bearer   tok-2 ":                 "tok-2",
		"Basic " + b64("ci-runner:tok-3"): "tok-3",
		"basic " + b64(":tok-4"):          "tok-4",
		"Basic " + b64("u:pa:ss"):         "pa:ss",
		"Basic " + b64("no-colon"):        "",
		"Basic !!!":                       "",
		"Bearer":                          "",
		"Bearertok":                       "",
		"Digest username=x":               "",
		"":                                "",
	} {
		got, _ := proxyAuthToken([]byte(v), nil)
		if string(got) != want {
			t.Errorf("proxyAuthToken(%q) = %q, want %q", v, got, want)
		}
	}
}

// FuzzCallerHeaders: the parsers of caller tokens never panic, and a token
// sent as a Basic password comes back whole.
func FuzzCallerHeaders(f *testing.F) {
	f.Add("Bearer x", "ci:tok")
	f.Add("Basic Y2k6dG9r", "a:")
	f.Fuzz(func(t *testing.T, header, userpass string) {
		_, _ = proxyAuthToken([]byte(header), nil)
		_, pass, ok := strings.Cut(userpass, ":")
		if !ok || pass == "" {
			return
		}
		v := "Basic " + base64.StdEncoding.EncodeToString([]byte(userpass))
		if got, _ := proxyAuthToken([]byte(v), make([]byte, 3)); string(got) != pass {
			t.Fatalf("Basic %q: password %q, want %q", userpass, got, pass)
		}
	})
}
