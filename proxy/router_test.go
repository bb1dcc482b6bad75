package proxy

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func testRouter() *router {
	return newRouter([]*route{
		{name: "root", prefix: "/"},
		{name: "github", prefix: "/github/"},
		{name: "github-api", prefix: "/github/api/"},
		{name: "host", host: "api.github.local", prefix: "/"},
		{name: "host-v2", host: "api.github.local", prefix: "/v2/"},
		{name: "other-host", host: "other.local", prefix: "/only/"},
	})
}

func TestRouterMatch(t *testing.T) {
	r := testRouter()
	tests := []struct {
		host, path, want string
	}{
		{"127.0.0.1:8080", "/", "root"},
		{"127.0.0.1:8080", "/x", "root"},
		{"127.0.0.1:8080", "/github/", "github"},
		{"127.0.0.1:8080", "/github", "github"}, // bare directory
		{"127.0.0.1:8080", "/githubx", "root"},
		{"127.0.0.1:8080", "/github/api/repos", "github-api"},
		{"127.0.0.1:8080", "/github/apix", "github"},
		{"api.github.local", "/github/", "host"}, // host route wins over any path route
		{"API.GitHub.Local:8080", "/v2/x", "host-v2"},
		{"api.github.local", "/v2", "host-v2"},
		{"other.local", "/only/x", "other-host"},
		{"other.local", "/github/x", "github"}, // host routes miss: fall back
		{"[::1]:8080", "/github/x", "github"},
		{"", "/github/x", "github"},
	}
	for _, tt := range tests {
		got := r.match([]byte(tt.host), []byte(tt.path))
		name := "<nil>"
		if got != nil {
			name = got.name
		}
		if name != tt.want {
			t.Errorf("match(%q, %q) = %s, want %s", tt.host, tt.path, name, tt.want)
		}
	}
}

func TestRouterNoRoute(t *testing.T) {
	r := newRouter([]*route{{name: "a", prefix: "/a/"}, {name: "h", host: "h.local", prefix: "/"}})
	for _, c := range [][2]string{{"x", "/"}, {"x", "/b/"}, {"x", "/a"}, {"h.local.evil", "/"}} {
		if c[1] == "/a" {
			continue // "/a" is the bare directory of "/a/"
		}
		if got := r.match([]byte(c[0]), []byte(c[1])); got != nil {
			t.Errorf("match(%q, %q) = %s, want none", c[0], c[1], got.name)
		}
	}
	if !r.hasHost([]byte("H.LOCAL:443")) || r.hasHost([]byte("evil")) {
		t.Error("hasHost")
	}
}

func TestUpstreamPath(t *testing.T) {
	tests := []struct {
		base, prefix string
		strip        bool
		path, want   string
	}{
		{"", "/github/", true, "/github/repos/x", "/repos/x"},
		{"", "/github/", true, "/github", "/"},
		{"", "/github/", false, "/github/repos", "/github/repos"},
		{"/v1", "/api/", true, "/api/users", "/v1/users"},
		{"/v1", "/api", true, "/api/users", "/v1/users"},
		{"/v1", "/", false, "/x", "/v1/x"},
	}
	for _, tt := range tests {
		rt := &route{basePath: tt.base, prefix: tt.prefix, strip: tt.strip}
		if got := string(rt.upstreamPath(nil, []byte(tt.path))); got != tt.want {
			t.Errorf("%+v: got %q", tt, got)
		}
	}
}

func TestRouterMatchAllocs(t *testing.T) {
	r := testRouter()
	host, path := []byte("API.github.local:8080"), []byte("/v2/items")
	if n := testing.AllocsPerRun(100, func() { r.match(host, path) }); n != 0 {
		t.Fatalf("match allocates %v times", n)
	}
}

// FuzzRouter: match never panics, and a match is always a route whose
// prefix covers the path and whose host, if any, is the request's.
func FuzzRouter(f *testing.F) {
	for _, s := range [][2]string{{"api.github.local", "/v2/x"}, {"[::1]:80", "/github"}, {"", ""}, {":", "/"}, {"A:B:C", "//"}} {
		f.Add(s[0], s[1])
	}
	r := testRouter()
	f.Fuzz(func(t *testing.T, host, path string) {
		rt := r.match([]byte(host), []byte(path))
		if rt == nil {
			if len(path) > 0 && path[0] == '/' {
				t.Fatalf("no match for %q %q despite a root route", host, path)
			}
			return
		}
		if !prefixMatch(rt.prefix, []byte(path)) {
			t.Fatalf("route %s prefix %q does not cover %q", rt.name, rt.prefix, path)
		}
		if rt.host != "" && string(hostKey(nil, []byte(host))) != rt.host {
			t.Fatalf("route %s host %q for request host %q", rt.name, rt.host, host)
		}
	})
}

func TestAppendTime(t *testing.T) {
	for _, ts := range []time.Time{
		time.Date(2026, 11, 22, 21, 0, 7, 5e6, time.UTC),
		time.Date(2026, 11, 22, 21, 0, 7, 999e6, time.FixedZone("x", 3600)),
		time.Date(2026, 11, 22, 21, 0, 8, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 250e6, time.UTC),
	} {
		if got, want := string(appendTime(nil, ts.UnixNano())), ts.UTC().Format("2006-01-02T15:04:05.000Z"); got != want {
			t.Errorf("appendTime = %s, want %s", got, want)
		}
	}
}

func TestHopMask(t *testing.T) {
	var h fasthttp.RequestHeader
	h.Set("Keep-Alive", "1")
	h.Set("te", "trailers")
	h.Set("X-Other", "1")
	h.Set("Connection", "X-Foo")
	m := hopMask(h.All())
	if m&hopConnection == 0 || m&1 == 0 || m&(1<<4) == 0 || m&(1<<6) != 0 {
		t.Fatalf("mask %016b", m)
	}
	var empty fasthttp.RequestHeader
	empty.Set("Accept", "*/*")
	if n := testing.AllocsPerRun(100, func() { hopMask(empty.All()) }); n != 0 {
		t.Fatalf("hopMask allocates %v", n)
	}
}
