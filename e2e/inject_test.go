package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

var testID atomic.Int64

// nextID returns a request id for X-Test-Id, to find the request upstream.
func nextID() string { return fmt.Sprintf("req-%d", testID.Add(1)) }

func TestInjectionForms(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	tok := secretValue(t)
	pass := secretValue(t)
	envTok := secretValue(t)
	rememberSecret(t, base64.StdEncoding.EncodeToString([]byte("user:"+pass)))
	writeSecretFile(t, filepath.Join(dir, "tok"), tok+"\n") // surrounding whitespace is trimmed
	writeSecretFile(t, filepath.Join(dir, "pass"), pass)

	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/resp-hop" {
			w.Header().Set("Connection", "X-Resp-Hop")
			w.Header().Set("X-Resp-Hop", "1")
			w.Header().Set("Keep-Alive", "timeout=9")
			w.Header().Set("X-Resp-End", "1")
		}
		w.Write([]byte("ok"))
	})
	upLong := newUpstream(t, nil)
	upHost := newUpstream(t, nil)

	bearer := "{credential: tok, as: bearer}"
	p := startSidekey(t, configYAML(nil,
		[]string{
			fileCred("tok", filepath.Join(dir, "tok")),
			fileCred("pass", filepath.Join(dir, "pass")),
			envCred("envtok", "E2E_ENV_TOKEN"),
		},
		[]route{
			{name: "bearer", prefix: "/bearer/", upstream: up.URL, strip: true, inject: bearer},
			{name: "header", prefix: "/header/", upstream: up.URL, strip: true, inject: "{credential: envtok, as: header, header: X-Api-Key}"},
			{name: "headerfmt", prefix: "/headerfmt/", upstream: up.URL, strip: true, inject: `{credential: tok, as: header, header: X-Api-Key, format: "token %s"}`},
			{name: "basic", prefix: "/basic/", upstream: up.URL, strip: true, inject: "{credential: pass, as: basic, username: user}"},
			{name: "query", prefix: "/query/", upstream: up.URL, strip: true, inject: "{credential: tok, as: query, param: api_key}"},
			{name: "nostrip", prefix: "/nostrip/", upstream: up.URL, inject: bearer},
			{name: "short", prefix: "/p/", upstream: up.URL, strip: true, inject: bearer},
			{name: "long", prefix: "/p/long/", upstream: upLong.URL, strip: true, inject: bearer},
			{name: "host", host: "api.local", upstream: upHost.URL, inject: bearer},
		}), withEnv("E2E_ENV_TOKEN="+envTok))
	waitOK(t, p, "/bearer/ready")
	waitOK(t, p, "/basic/ready")
	waitOK(t, p, "/header/ready")

	// appHeaders is what a misbehaving app sends: its own credentials.
	appHeaders := func(id string) []string {
		return []string{
			"X-Test-Id", id,
			"Authorization", "Bearer app-chosen",
			"Proxy-Authorization", "Basic YXBwOmFwcA==",
			"X-Api-Key", "app-chosen",
		}
	}
	// through sends a request and returns what the upstream u saw.
	through := func(t *testing.T, u *upstream, path string, hdr ...string) seenRequest {
		t.Helper()
		id := nextID()
		resp, body := p.get(t, path, append(appHeaders(id), hdr...)...)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d, body %q", path, resp.StatusCode, maskSecrets(string(body)))
		}
		seen, ok := u.byID(id)
		if !ok {
			t.Fatalf("GET %s: the expected upstream did not receive the request", path)
		}
		if v := seen.Header.Values("Proxy-Authorization"); len(v) != 0 {
			t.Errorf("GET %s: upstream received Proxy-Authorization %q", path, v)
		}
		return seen
	}
	wantOne := func(t *testing.T, seen seenRequest, name, want string) {
		t.Helper()
		got := seen.Header.Values(name)
		if len(got) != 1 || got[0] != want {
			t.Errorf("upstream %s = %q, want exactly the injected value", name, maskSecrets(fmt.Sprint(got)))
		}
	}

	t.Run("bearer", func(t *testing.T) {
		seen := through(t, up, "/bearer/echo?x=1")
		wantOne(t, seen, "Authorization", "Bearer "+tok)
		if seen.Path != "/echo" || seen.RawQuery != "x=1" {
			t.Errorf("upstream got %s?%s, want /echo?x=1", seen.Path, seen.RawQuery)
		}
	})
	t.Run("header", func(t *testing.T) {
		seen := through(t, up, "/header/echo")
		wantOne(t, seen, "X-Api-Key", envTok)
	})
	t.Run("header with format", func(t *testing.T) {
		seen := through(t, up, "/headerfmt/echo")
		wantOne(t, seen, "X-Api-Key", "token "+tok)
	})
	t.Run("basic", func(t *testing.T) {
		seen := through(t, up, "/basic/echo")
		if n := len(seen.Header.Values("Authorization")); n != 1 {
			t.Fatalf("upstream got %d Authorization headers, want 1", n)
		}
		r := &http.Request{Header: seen.Header}
		user, pw, ok := r.BasicAuth()
		if !ok || user != "user" || pw != pass {
			t.Errorf("upstream basic auth = (%q, %q, %v), want user and the credential", user, maskSecrets(pw), ok)
		}
	})
	t.Run("query", func(t *testing.T) {
		seen := through(t, up, "/query/echo?api_key=app-chosen&keep=1")
		vals, err := url.ParseQuery(seen.RawQuery)
		if err != nil {
			t.Fatal(err)
		}
		if got := vals["api_key"]; len(got) != 1 || got[0] != tok {
			t.Errorf("upstream api_key = %q, want exactly the injected value", maskSecrets(fmt.Sprint(got)))
		}
		if got := vals["keep"]; len(got) != 1 || got[0] != "1" {
			t.Errorf("upstream keep = %q, want [1]", got)
		}
		if seen.Path != "/echo" {
			t.Errorf("upstream path %q, want /echo", seen.Path)
		}
	})
	t.Run("request hop-by-hop headers", func(t *testing.T) {
		id := nextID()
		raw := "GET /bearer/hop HTTP/1.1\r\n" +
			"Host: " + p.ProxyAddr + "\r\n" +
			"X-Test-Id: " + id + "\r\n" +
			"Authorization: Bearer app-chosen\r\n" +
			"Proxy-Authorization: Basic YXBwOmFwcA==\r\n" +
			"Connection: keep-alive, X-Hop-Custom\r\n" +
			"X-Hop-Custom: drop-me\r\n" +
			"Keep-Alive: timeout=5\r\n" +
			"TE: deflate\r\n" +
			"Trailer: X-Trail\r\n" +
			"Upgrade: h2c\r\n" +
			"Proxy-Connection: keep-alive\r\n" +
			"X-End-To-End: keep-me\r\n" +
			"\r\n"
		resp, body, err := rawExchange(t, p.ProxyAddr, raw)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body %q", resp.StatusCode, maskSecrets(string(body)))
		}
		seen, ok := up.byID(id)
		if !ok {
			t.Fatal("upstream did not receive the request")
		}
		wantOne(t, seen, "Authorization", "Bearer "+tok)
		// Trailer announces trailer fields, which pass end to end with the
		// chunked body they end (RFC 9110 section 6.6.2): it is no hop-by-hop
		// header, and goes on.
		wantOne(t, seen, "Trailer", "X-Trail")
		for _, h := range []string{"Proxy-Authorization", "X-Hop-Custom", "Keep-Alive", "Te", "Upgrade", "Proxy-Connection"} {
			if v := seen.Header.Values(h); len(v) != 0 {
				t.Errorf("upstream received hop-by-hop header %s: %q", h, v)
			}
		}
		for _, v := range seen.Header.Values("Connection") {
			if strings.Contains(strings.ToLower(v), "x-hop-custom") {
				t.Errorf("upstream Connection header still lists X-Hop-Custom: %q", v)
			}
		}
		if got := seen.Header.Get("X-End-To-End"); got != "keep-me" {
			t.Errorf("end-to-end header X-End-To-End = %q, want keep-me", got)
		}
	})
	t.Run("response hop-by-hop headers", func(t *testing.T) {
		resp, _ := p.get(t, "/bearer/resp-hop")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for _, h := range []string{"X-Resp-Hop", "Keep-Alive"} {
			if v := resp.Header.Values(h); len(v) != 0 {
				t.Errorf("client received hop-by-hop response header %s: %q", h, v)
			}
		}
		if resp.Header.Get("X-Resp-End") != "1" {
			t.Errorf("end-to-end response header X-Resp-End lost")
		}
	})
	t.Run("strip prefix", func(t *testing.T) {
		if seen := through(t, up, "/bearer/a/b"); seen.Path != "/a/b" {
			t.Errorf("strip_prefix: upstream path %q, want /a/b", seen.Path)
		}
		if seen := through(t, up, "/nostrip/a/b"); seen.Path != "/nostrip/a/b" {
			t.Errorf("no strip_prefix: upstream path %q, want /nostrip/a/b", seen.Path)
		}
	})
	t.Run("longest prefix wins", func(t *testing.T) {
		if seen := through(t, upLong, "/p/long/x"); seen.Path != "/x" {
			t.Errorf("/p/long/x reached the long route as %q, want /x", seen.Path)
		}
		if seen := through(t, up, "/p/other"); seen.Path != "/other" {
			t.Errorf("/p/other reached the short route as %q, want /other", seen.Path)
		}
	})
	t.Run("host route wins over path routes", func(t *testing.T) {
		for _, host := range []string{"api.local", "api.local:8080", "API.Local"} {
			seen := through(t, upHost, "/bearer/x", "Host", host)
			if seen.Path != "/bearer/x" {
				t.Errorf("Host %s: upstream path %q, want /bearer/x", host, seen.Path)
			}
			wantOne(t, seen, "Authorization", "Bearer "+tok)
		}
	})
}
