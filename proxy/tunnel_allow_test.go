package proxy

import (
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sidekey/sidekey/config"
)

func TestTunnelPatternParse(t *testing.T) {
	tests := []struct {
		in    string
		below bool
		host  string
		port  uint16
	}{
		{"api.example.com", false, "api.example.com", 443},
		{"API.Example.COM.", false, "api.example.com", 443},
		{"api.example.com:8443", false, "api.example.com", 8443},
		{"*.amazonaws.com", true, "amazonaws.com", 443},
		{"*.Example.com.:443", true, "example.com", 443},
		{"*.example.com:22", true, "example.com", 22},
		{"*.co.uk", true, "co.uk", 443}, // a syntax check, not a public-suffix one
		{"localhost", false, "localhost", 443},
		{"203.0.113.5", false, "203.0.113.5", 443},
		{"203.0.113.5:8443", false, "203.0.113.5", 8443},
		{"[2001:DB8::1]", false, "2001:db8::1", 443},
		{"[2001:db8::1]:8443", false, "2001:db8::1", 8443},
	}
	for _, tt := range tests {
		got, err := parseTunnelPattern(tt.in)
		if err != nil {
			t.Errorf("parseTunnelPattern(%q): %v", tt.in, err)
			continue
		}
		if want := (tunnelPattern{tt.below, tt.host, tt.port}); got != want {
			t.Errorf("parseTunnelPattern(%q) = %+v, want %+v", tt.in, got, want)
		}
	}
}

func TestTunnelPatternRefused(t *testing.T) {
	for _, in := range []string{
		"", " ", "*", "*.", "*.*", "**.example.com", "*.*.example.com", "a.*.example.com",
		"*a.example.com", "a*.example.com", "example.*", "*.com", "*.com.", "*.localhost",
		"*.203.0.113.5", "*.[2001:db8::1]", "*[2001:db8::1]",
		" api.example.com", "api.example.com ", "api .example.com",
		"api.example.com:", "api.example.com:0", "api.example.com:65536", "api.example.com:abc",
		"api.example.com:+443", "api.example.com:0443", ":443", "*.example.com:",
		"http://api.example.com", "api.example.com/", "user@api.example.com", "api%2eexample.com",
		"[203.0.113.5]", "2001:db8::1", "[fe80::1%eth0]", "[2001:db8::1]x",
		"-api.example.com", "api..example.com", "example.123", "127.1",
		strings.Repeat("a", 64) + ".example.com", strings.Repeat("a.", 127) + "bc",
	} {
		if got, err := parseTunnelPattern(in); err == nil {
			t.Errorf("parseTunnelPattern(%q) = %+v, want an error", in, got)
		}
	}
}

func TestTunnelAllow(t *testing.T) {
	a, err := newTunnelAllow([]string{
		"*.amazonaws.com",
		"api.example.com:8443",
		"*.example.com:443",
		"Exact.Example.ORG.",
		"203.0.113.5",
		"[2001:db8::1]:8443",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target string
		want   bool
	}{
		{"s3.amazonaws.com:443", true},
		{"S3.AmazonAWS.com.:443", true},
		{"a.b.c.amazonaws.com:443", true},
		{"amazonaws.com:443", false}, // "*." is below the suffix, never the suffix itself
		{"s3.amazonaws.com:22", false},
		{"s3.amazonaws.com:80", false},
		{"evilamazonaws.com:443", false},
		{"amazonaws.com.evil.net:443", false},
		{"s3.amazonaws.co:443", false},
		{"api.example.com:8443", true},
		{"api.example.com:443", true}, // through *.example.com:443
		{"api.example.com:80", false},
		{"x.api.example.com:8443", false},
		{"example.com:443", false},
		{"exact.example.org:443", true},
		{"sub.exact.example.org:443", false},
		{"exact.example.org:444", false},
		{"203.0.113.5:443", true},
		{"203.0.113.5:8443", false},
		{"203.0.113.6:443", false},
		{"[2001:0db8::0:1]:8443", true},
		{"[2001:db8::1]:443", false},
		{"[::ffff:203.0.113.5]:443", false}, // a different literal; the guard judges the address
	}
	for _, tt := range tests {
		tg, err := parseConnectTarget(tt.target)
		if err != nil {
			t.Fatalf("%s: %v", tt.target, err)
		}
		if got := a.allows(tg); got != tt.want {
			t.Errorf("allows(%s) = %v, want %v", tt.target, got, tt.want)
		}
	}
}

// A wildcard never matches an IP literal, even one whose text ends like the
// suffix would.
func TestTunnelAllowWildcardSkipsAddresses(t *testing.T) {
	a := &tunnelAllow{below: map[tunnelKey]struct{}{{"0.113.5", 443}: {}, {"db8::1", 443}: {}}}
	for _, s := range []string{"203.0.113.5:443", "[2001:db8::1]:443"} {
		tg, _ := parseConnectTarget(s)
		if a.allows(tg) {
			t.Errorf("allows(%s) through a wildcard", s)
		}
	}
}

func TestTunnelAllowEmpty(t *testing.T) {
	tg, _ := parseConnectTarget("api.example.com:443")
	var nilAllow *tunnelAllow
	if nilAllow.allows(tg) {
		t.Error("a nil list admits a target")
	}
	a, err := newTunnelAllow(nil)
	if err != nil || a.allows(tg) {
		t.Errorf("an empty list: %v, admits %v", err, a.allows(tg))
	}
}

// Every bad pattern is reported, each naming itself.
func TestTunnelAllowReportsEveryError(t *testing.T) {
	_, err := newTunnelAllow([]string{"ok.example.com", "*.com", "a.*.example.com", "x.example.com:0"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`"*.com"`, `"a.*.example.com"`, `"x.example.com:0"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "ok.example.com") {
		t.Errorf("%q names a good pattern", err)
	}
	if errors.Is(err, errBadTarget) {
		t.Errorf("a config error %q claims to be a bad request target", err)
	}
}

// FuzzTunnelPattern: the pattern parser never panics, an accepted pattern is
// canonical (written back, it parses to the same pattern), and the compiled
// list admits the pattern's own host (one label down for "*.").
func FuzzTunnelPattern(f *testing.F) {
	for _, s := range []string{"*.amazonaws.com", "api.example.com:8443", "[2001:db8::1]", "*.*.x", "*.com", "1.2.3.4:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseTunnelPattern(s)
		if err != nil {
			return
		}
		text := net.JoinHostPort(p.host, strconv.Itoa(int(p.port)))
		if p.below {
			text = "*." + text
		}
		again, err := parseTunnelPattern(text)
		if err != nil || again != p {
			t.Fatalf("%q: %+v written back as %q gives %+v, %v", s, p, text, again, err)
		}
		a, err := newTunnelAllow([]string{s})
		if err != nil {
			t.Fatalf("%q parses but does not compile: %v", s, err)
		}
		host := p.host
		if p.below {
			host = "x." + host
		}
		tg, err := parseConnectTarget(net.JoinHostPort(host, strconv.Itoa(int(p.port))))
		if err == nil && !a.allows(tg) {
			t.Fatalf("%q does not admit %v", s, tg)
		}
		if p.below && err == nil {
			apex, _ := parseConnectTarget(net.JoinHostPort(p.host, strconv.Itoa(int(p.port))))
			if a.allows(apex) {
				t.Fatalf("%q admits its own suffix %v", s, apex)
			}
		}
	})
}

// tunnelPatternCorpus is every pattern the tests above try, accepted or not.
func tunnelPatternCorpus() []string {
	return []string{
		"api.example.com", "API.Example.COM.", "api.example.com:8443", "*.amazonaws.com", "*.Example.com.:443",
		"*.example.com:22", "*.co.uk", "localhost", "203.0.113.5", "203.0.113.5:8443", "[2001:DB8::1]",
		"[2001:db8::1]:8443", "[::ffff:10.0.0.1]", "under_score.example", "a-b.example:65535",
		"", " ", "*", "*.", "*.*", "**.example.com", "*.*.example.com", "a.*.example.com",
		"*a.example.com", "a*.example.com", "example.*", "*.com", "*.com.", "*.localhost",
		"*.203.0.113.5", "*.[2001:db8::1]", "*[2001:db8::1]",
		" api.example.com", "api.example.com ", "api .example.com",
		"api.example.com:", "api.example.com:0", "api.example.com:65536", "api.example.com:abc",
		"api.example.com:+443", "api.example.com:0443", ":443", "*.example.com:",
		"http://api.example.com", "api.example.com/", "user@api.example.com", "api%2eexample.com",
		"[203.0.113.5]", "2001:db8::1", "[fe80::1%eth0]", "[2001:db8::1]x", "01.2.3.4", "1.2.3.4.",
		"-api.example.com", "api..example.com", "example.123", "127.1", "é.example",
		strings.Repeat("a", 64) + ".example.com", strings.Repeat("a.", 127) + "bc", strings.Repeat("a.", 126) + "bc",
	}
}

// TestTunnelPatternConfigAgrees: config validates allow_tunnel with its own
// copy of the grammar (it imports nothing of ours); both accept and refuse
// the same patterns.
func TestTunnelPatternConfigAgrees(t *testing.T) {
	for _, p := range tunnelPatternCorpus() {
		checkTunnelPatternAgrees(t, p)
	}
}

func checkTunnelPatternAgrees(t *testing.T, p string) {
	t.Helper()
	q, err := json.Marshal(p)
	if err != nil {
		return
	}
	_, perr := parseTunnelPattern(p)
	src := "forward_proxy:\n  listen: 127.0.0.1:3128\n  allow_tunnel: [" + string(q) + "]\n"
	_, cerr := config.Parse("f.yaml", []byte(src))
	if (perr == nil) != (cerr == nil) {
		t.Errorf("%q: the proxy says %v, config says %v", p, perr, cerr)
	}
}

func FuzzTunnelPatternConfigAgrees(f *testing.F) {
	for _, p := range tunnelPatternCorpus() {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !utf8.ValidString(p) || strings.ContainsAny(p, "\x00\ufeff") || len(p) > 300 {
			return // not something YAML carries as written
		}
		checkTunnelPatternAgrees(t, p)
	})
}
