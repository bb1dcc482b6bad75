package proxy

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestParseConnectTarget(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 61) // 64*3+61 = 253
	tests := []struct {
		in   string
		host string
		port uint16
		ip   bool
	}{
		{"example.com:443", "example.com", 443, false},
		{"EXAMPLE.Com:443", "example.com", 443, false},
		{"example.com.:443", "example.com", 443, false}, // one trailing dot stripped
		{"api.example.com:1", "api.example.com", 1, false},
		{"api.example.com:65535", "api.example.com", 65535, false},
		{"localhost:8080", "localhost", 8080, false},
		{"my_host.example.com:443", "my_host.example.com", 443, false},
		{"xn--bcher-kva.example:443", "xn--bcher-kva.example", 443, false},
		{"a-b.c-d.example:443", "a-b.c-d.example", 443, false},
		{"1a.example.com:443", "1a.example.com", 443, false}, // only the last label must begin with a letter
		{label63 + ".example:443", label63 + ".example", 443, false},
		{name253 + ":443", name253, 443, false},
		{name253 + ".:443", name253, 443, false},
		{"1.2.3.4:80", "1.2.3.4", 80, true},
		{"0.0.0.0:80", "0.0.0.0", 80, true},
		{"[2001:DB8::1]:443", "2001:db8::1", 443, true},
		{"[2001:0db8:0:0:0:0:0:1]:443", "2001:db8::1", 443, true},
		{"[::1]:443", "::1", 443, true},
		{"[::ffff:1.2.3.4]:443", "::ffff:1.2.3.4", 443, true},
	}
	for _, tt := range tests {
		got, err := parseConnectTarget(tt.in)
		if err != nil {
			t.Errorf("parseConnectTarget(%q): %v", tt.in, err)
			continue
		}
		if got.host != tt.host || got.port != tt.port || got.ip.IsValid() != tt.ip {
			t.Errorf("parseConnectTarget(%q) = %q %d ip=%v, want %q %d ip=%v",
				tt.in, got.host, got.port, got.ip.IsValid(), tt.host, tt.port, tt.ip)
		}
		if tt.ip && got.ip.String() != got.host {
			t.Errorf("parseConnectTarget(%q): ip %v disagrees with host %q", tt.in, got.ip, got.host)
		}
	}
}

func TestParseConnectTargetRefused(t *testing.T) {
	label64 := strings.Repeat("a", 64)
	name254 := strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 62)
	tests := []struct{ in, why string }{
		{"", "empty"},
		{"example.com", "missing port"},
		{"example.com:", "missing port"},
		{":443", "empty host"},
		{"[::1]", "missing port"},
		{"[::1]:", "missing port"},
		{"example.com:0", "port out of range"},
		{"example.com:65536", "port out of range"},
		{"example.com:99999", "port out of range"},
		{"example.com:100000", "port out of range"},
		{"example.com:0443", "port out of range"}, // leading zero
		{"example.com:443a", "port not a number"},
		{"example.com:-1", "port not a number"},
		{"example.com:+443", "port not a number"},
		{"example.com:0x1bb", "port out of range"},
		{"example.com: 443", "whitespace"},
		{"example.com:443 ", "whitespace"},
		{"exa mple.com:443", "whitespace"},
		{"example.com\t:443", "whitespace"},
		{"example.com\r\n:443", "whitespace"},
		{"example.com\x00:443", "control"},
		{"example.com\x7f:443", "control"},
		{"ëxample.com:443", "non-ASCII"},
		{"user@example.com:443", "userinfo"},
		{"user:pw@example.com:443", "userinfo"},
		{"example.com:443/", "path"},
		{"example.com/x:443", "path"},
		{"http://example.com:443", "path"},
		{"example.com:443?x", "query"},
		{"example.com:443#f", "fragment"},
		{`example.com\@evil.com:443`, "path"},
		{"ex%61mple.com:443", "percent-encoding"},
		{"[fe80::1%25eth0]:443", "zone"},
		{"[fe80::1%eth0]:443", "zone"},
		{"[example.com]:443", "brackets"},
		{"[1.2.3.4]:443", "brackets"},
		{"[]:443", "brackets"},
		{"[::1:443", "unclosed bracket"},
		{"[::1]443", "text after bracket"},
		{"[::1]x:443", "text after bracket"},
		{"::1:443", "without brackets"},
		{"2001:db8::1:443", "without brackets"},
		{"example.com:443:443", "without brackets"},
		{"example..com:443", "empty label"},
		{".example.com:443", "empty label"},
		{"example.com..:443", "empty label"}, // only one trailing dot is stripped
		{".:443", "empty host"},
		{"-example.com:443", "hyphen"},
		{"example-.com:443", "hyphen"},
		{"example.-com:443", "hyphen"},
		{"exa$mple.com:443", "invalid character"},
		{"*.example.com:443", "invalid character"},
		{"exa[mple.com:443", "invalid character"},
		{label64 + ".example:443", "longer than 63"},
		{name254 + ":443", "longer than 253"},
		{"127.1:443", "letter"},
		{"0x7f.0.0.1:443", "letter"},
		{"2130706433:443", "letter"},
		{"1.2.3.4.:443", "letter"},
		{"01.2.3.4:443", "letter"}, // not dotted-decimal: a name ending in a digit
		{"example.123:443", "letter"},
		{"example._com:443", "letter"},
	}
	for _, tt := range tests {
		got, err := parseConnectTarget(tt.in)
		if err == nil {
			t.Errorf("parseConnectTarget(%q) = %+v, want an error (%s)", tt.in, got, tt.why)
			continue
		}
		if !errors.Is(err, errBadTarget) {
			t.Errorf("parseConnectTarget(%q): %v is not errBadTarget", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.why) {
			t.Errorf("parseConnectTarget(%q): %q does not say %q", tt.in, err, tt.why)
		}
	}
}

// The error never repeats the input: a CONNECT target with userinfo may
// carry a password.
func TestParseConnectTargetErrorQuotesNothing(t *testing.T) {
	for _, in := range []string{"user:s3cr3t@example.com:443", "s3cr3t.example.com", "[s3cr3t]:443"} {
		_, err := parseConnectTarget(in)
		if err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("parseConnectTarget(%q): %v", in, err)
		}
	}
}

func TestParseAbsoluteTarget(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port uint16
	}{
		{"http://example.com/", "example.com", 80},
		{"http://example.com", "example.com", 80},
		{"HTTP://Example.COM/path", "example.com", 80},
		{"http://example.com:8080/x?y=1", "example.com", 8080},
		{"http://example.com?x", "example.com", 80},
		{"http://example.com#f", "example.com", 80},
		{"http://example.com./", "example.com", 80},
		{"http://example.com/a@b%2F:c", "example.com", 80}, // the path is not examined
		{"http://1.2.3.4:81/", "1.2.3.4", 81},
		{"http://[::1]:8080/", "::1", 8080},
		{"http://[::1]/", "::1", 80},
	}
	for _, tt := range tests {
		got, err := parseAbsoluteTarget(tt.in)
		if err != nil {
			t.Errorf("parseAbsoluteTarget(%q): %v", tt.in, err)
			continue
		}
		if got.host != tt.host || got.port != tt.port {
			t.Errorf("parseAbsoluteTarget(%q) = %q %d, want %q %d", tt.in, got.host, got.port, tt.host, tt.port)
		}
	}
	for _, in := range []string{
		"", "/path", "example.com/x", "https://example.com/", "ftp://example.com/", "http:/example.com/",
		"http://", "http:///path", "http://user@example.com/", "http://user:pw@example.com/",
		"http://example.com:/", "http://example.com:0/", "http://example.com:65536/",
		"http://exa%6dple.com/", `http://example.com\@evil.com/`, "http://exa mple.com/",
		"http://::1/", "http://[example.com]/", "http://127.1/", "http://[fe80::1%25eth0]/",
	} {
		if got, err := parseAbsoluteTarget(in); !errors.Is(err, errBadTarget) {
			t.Errorf("parseAbsoluteTarget(%q) = %+v, %v; want errBadTarget", in, got, err)
		}
	}
}

func TestTargetString(t *testing.T) {
	for in, want := range map[string]string{
		"Example.com.:443":  "example.com:443",
		"[2001:DB8::1]:443": "[2001:db8::1]:443",
		"1.2.3.4:80":        "1.2.3.4:80",
	} {
		got, err := parseConnectTarget(in)
		if err != nil || got.String() != want {
			t.Errorf("parseConnectTarget(%q).String() = %q, %v; want %q", in, got.String(), err, want)
		}
	}
}

// FuzzParseTarget: the parsers never panic, and whatever they accept is
// canonical: written back as host:port it parses to the same target.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"example.com:443", "EXAMPLE.com.:443", "[2001:db8::1]:443", "[::ffff:1.2.3.4]:443",
		"1.2.3.4:80", "user@example.com:443", "[fe80::1%eth0]:443", "127.1:443", "::1:443",
		"example.com:0443", "a_b.example:65535", "http://example.com:8080/x", "HTTP://[::1]/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) (target, error){parseConnectTarget, parseAbsoluteTarget} {
			got, err := parse(s)
			if err != nil {
				if !errors.Is(err, errBadTarget) {
					t.Fatalf("%q: error %v is not errBadTarget", s, err)
				}
				continue
			}
			checkCanonicalTarget(t, s, got)
		}
	})
}

func checkCanonicalTarget(t *testing.T, s string, got target) {
	t.Helper()
	if got.port == 0 || got.host == "" {
		t.Fatalf("%q: accepted %+v", s, got)
	}
	if got.ip.IsValid() {
		if got.ip.Zone() != "" || got.ip.String() != got.host {
			t.Fatalf("%q: ip %v, host %q", s, got.ip, got.host)
		}
	} else if _, err := netip.ParseAddr(got.host); err == nil {
		t.Fatalf("%q: host %q is an address but ip is not set", s, got.host)
	}
	again, err := parseConnectTarget(net.JoinHostPort(got.host, strconv.Itoa(int(got.port))))
	if err != nil {
		t.Fatalf("%q: accepted as %+v, but its re-serialisation is refused: %v", s, got, err)
	}
	if again != got {
		t.Fatalf("%q: %+v re-parses as %+v", s, got, again)
	}
}
