package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sidekey/sidekey/config"
)

func TestCanonicalPath(t *testing.T) {
	for raw, want := range map[string]string{
		"":                          "/",
		"/":                         "/",
		"/a":                        "/a",
		"/a/":                       "/a/",
		"//a///b//":                 "/a/b/",
		"/projects/group%2Fproject": "/projects/group%2Fproject",
		"/projects/group%2fproject": "/projects/group%2fproject", // the app's escapes, case and all
		"/a%5Cb":                    "/a%5Cb",
		"/a%20b%25c":                "/a%20b%25c",
		"/%7Euser/%41":              "/%7Euser/%41",
		"/caf%c3%a9":                "/caf%c3%a9",
		"/a/./b":                    "/a/b",
		"/a/b/..":                   "/a/",
		"/a/b/.":                    "/a/b/",
		"/github/../internal/":      "/internal/",
		"/github/%2e%2e/internal/":  "/internal/",
		"/github/.%2E/internal":     "/internal",
		"/github/%2E/x":             "/github/x",
		"/../../etc/passwd":         "/etc/passwd",
		"/a/../..":                  "/",
		"/..":                       "/",
		"/a/b/../../../c":           "/c",
		"/a/...":                    "/a/...",
		"/a/..b/.c/c.":              "/a/..b/.c/c.",
		"/%252e%252e/x":             "/%252e%252e/x",
		"/group%2Fproject%2F..x":    "/group%2Fproject%2F..x", // "..x" is a name on both sides
		"/a%2F%2Fb":                 "/a%2F%2Fb",
	} {
		got, err := canonicalPath([]byte("prefix"), []byte(raw))
		if err != nil || string(got) != "prefix"+want {
			t.Errorf("canonicalPath(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	// Dot segments an upstream decoding %2F or %5C as a separator would see.
	for _, raw := range []string{"/b/..%2Finternal", "/b/%2E%2E%2fx", "/b/a%2F..", "/b/a%5C.", "/b/x%2F.%2Fy", "/b/a\\..\\x"} {
		if got, err := canonicalPath([]byte("x"), []byte(raw)); err == nil || string(got) != "x" {
			t.Errorf("canonicalPath(%q) = %q, %v; want errBadPath", raw, got, err)
		}
	}
	for _, raw := range []string{"/a%", "/a%2", "/a%zz", "/%g0"} {
		if got, err := canonicalPath([]byte("x"), []byte(raw)); err == nil || string(got) != "x" {
			t.Errorf("canonicalPath(%q) = %q, %v; want errBadPath and dst unchanged", raw, got, err)
		}
	}
}

// FuzzCanonicalPath: canonical paths are a fixed point, start with '/',
// hold no empty segment, and hold no dot segment, also once decoded as the
// most lenient upstream would decode them.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/a/../b", "/%2e%2E/x", "//a//b/", "/a%2Fb", "/%", "/a/./b/."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := canonicalPath(nil, []byte(raw))
		if err != nil {
			return
		}
		again, err := canonicalPath(nil, got)
		if err != nil || string(again) != string(got) {
			t.Fatalf("not a fixed point: %q -> %q -> %q (%v)", raw, got, again, err)
		}
		if got[0] != '/' || strings.Contains(string(got), "//") {
			t.Fatalf("%q -> %q", raw, got)
		}
		for _, seg := range strings.Split(string(got), "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q -> %q keeps a dot segment", raw, got)
			}
		}
		dec, err := url.PathUnescape(string(got))
		if err != nil {
			t.Fatalf("%q -> %q does not unescape: %v", raw, got, err)
		}
		// Not even an upstream that decodes %2F and %5C as separators
		// sees a dot segment.
		for _, seg := range strings.FieldsFunc(dec, func(r rune) bool { return r == '/' || r == '\\' }) {
			if seg == "." || seg == ".." {
				t.Fatalf("%q -> %q decodes to %q, with a dot segment", raw, got, dec)
			}
		}
	})
}

// The upstream gets the app's escapes as sent, and dot segments are
// resolved before routing, so that no spelling of a path reaches another
// route's upstream with its credential.
func TestPathsForwardedWithTheirEscapes(t *testing.T) {
	up, u := newUpstream(t)
	other, ou := newUpstream(t)
	e := &env{}
	e.set("TOKEN", "tok")
	base := startProxy(t, e,
		testRoute("b", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"}),
		testRoute("internal", "/internal/", ou, &config.Inject{Credential: "cred", As: "bearer"}))
	addr := strings.TrimPrefix(base, "http://")
	req, _ := http.NewRequest("GET", base+"/b/warm", nil)
	get(t, req, 200).Body.Close()
	for _, tc := range []struct {
		raw, wantURI string
		internal     bool
	}{
		{"/b/projects/group%2Fproject?x=%2F", "/projects/group%2Fproject?x=%2F", false},
		{"/b/a%5Cb/%7Euser", "/a%5Cb/%7Euser", false},
		{"/b//a///b/", "/a/b/", false},

		{"/b/../internal/x", "/x", true},
		{"/b/%2e%2e/internal/y", "/y", true},
	} {
		status, _ := rawRequest(t, addr, "GET "+tc.raw+" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
		seen := up
		if tc.internal {
			seen = other
		}
		if status != 200 || *seen.uri.Load() != tc.wantURI {
			t.Errorf("%s: status %d, %s upstream saw %q, want %q", tc.raw, status,
				map[bool]string{false: "the /b/", true: "the /internal/"}[tc.internal], *seen.uri.Load(), tc.wantURI)
		}
	}
	for _, bad := range []string{"/b/%zz", "/b/..%2Finternal/x"} {
		if status, body := rawRequest(t, addr, "GET "+bad+" HTTP/1.1\r\nHost: localhost\r\n\r\n"); status != 400 || !strings.Contains(body, "bad_request") {
			t.Errorf("%s: %d %s, want 400 bad_request", bad, status, body)
		}
	}
}
