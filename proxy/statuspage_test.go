package proxy

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// The status page is one self-contained file: no outside assets, and a
// CSP that allows exactly its inline script and style (by hash) and
// connections to its own origin.
func TestStatusPage(t *testing.T) {
	a := &Admin{}
	base := startEventsAdmin(t, a, nil)
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("GET /: %d %v", resp.StatusCode, resp.Header)
	}
	page := string(body)
	csp := resp.Header.Get("Content-Security-Policy")
	directives := map[string]string{}
	for _, d := range strings.Split(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{
		"default-src": "'none'", "connect-src": "'self'", "base-uri": "'none'",
		"form-action": "'none'", "frame-ancestors": "'none'",
	} {
		if directives[name] != want {
			t.Errorf("CSP %s = %q, want %q (CSP %q)", name, directives[name], want, csp)
		}
	}
	for _, tag := range []string{"script", "style"} {
		blocks := regexp.MustCompile(`(?s)<`+tag+`>(.*?)</`+tag+`>`).FindAllStringSubmatch(page, -1)
		if len(blocks) != 1 {
			t.Fatalf("%d inline <%s> blocks, want 1", len(blocks), tag)
		}
		sum := sha256.Sum256([]byte(blocks[0][1]))
		want := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if directives[tag+"-src"] != want {
			t.Errorf("CSP %s-src = %q, want only the hash of the inline %s, %s", tag, directives[tag+"-src"], tag, want)
		}
	}
	if m := regexp.MustCompile(`(?i)(src|href)\s*=|url\(|@import|https?://`).FindString(page); m != "" {
		t.Errorf("the page refers to something outside itself: %q", m)
	}
	if regexp.MustCompile(`\son[a-z]+\s*=\s*"`).MatchString(page) {
		t.Error("the page has an inline event handler attribute, which its CSP blocks")
	}
	for _, want := range []string{`id="credentials"`, `id="certificates"`, `id="routes"`, `id="callers"`, `id="timeline"`,
		`new EventSource("/v1/events?since=0")`, `name="viewport"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page has no %s", want)
		}
	}
}

func TestRoutesEndpoint(t *testing.T) {
	a := &Admin{}
	base := startEventsAdmin(t, a, nil)
	get := func() []map[string]any {
		resp, err := http.Get(base + "/v1/routes")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /v1/routes: %d %v", resp.StatusCode, err)
		}
		return out
	}
	if got := get(); len(got) != 0 {
		t.Errorf("without Routes: %v, want []", got)
	}
	a.Routes = func() any { return []map[string]string{{"name": "github"}} }
	if got := get(); len(got) != 1 || got[0]["name"] != "github" {
		t.Errorf("GET /v1/routes = %v", got)
	}
}
