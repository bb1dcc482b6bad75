package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

func TestMapLocation(t *testing.T) {
	compile := func(prefix, upstream string, strip bool) *route {
		t.Helper()
		u, _ := url.Parse(upstream)
		rt, err := compileRoute(config.Route{Name: "r", PathPrefix: prefix, Upstream: u, StripPrefix: strip},
			holderMap{}, &callerTable{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	stripped := compile("/hb/", "http://127.0.0.1:9000", true)
	based := compile("/ex/", "https://api.example.com/v1/", true)
	plain := compile("/", "http://up.internal:8080", false)
	app := &exchange{appHost: []byte("127.0.0.1:8080")}
	tlsApp := &exchange{appHost: []byte("gw.example.com"), tls: true}
	unixApp := &exchange{appHost: []byte("localhost"), unix: true}
	for _, tc := range []struct {
		rt   *route
		x    *exchange
		in   string
		want string // "" = left alone
	}{
		{stripped, app, "http://127.0.0.1:9000/get", "http://127.0.0.1:8080/hb/get"},
		{stripped, app, "HTTP://127.0.0.1:9000/get?a=1#f", "http://127.0.0.1:8080/hb/get?a=1#f"},
		{stripped, app, "http://127.0.0.1:9000", "http://127.0.0.1:8080/hb/"},
		{stripped, app, "http://127.0.0.1:9000?x=1", "http://127.0.0.1:8080/hb/?x=1"},
		{stripped, app, "//127.0.0.1:9000/get", "http://127.0.0.1:8080/hb/get"},
		{stripped, app, "/relative/2", "/hb/relative/2"},
		{stripped, app, "http://127.0.0.1:9001/get", ""},  // another port: another server
		{stripped, app, "https://127.0.0.1:9000/get", ""}, // another scheme
		{stripped, app, "http://evil.example/get", ""},    // elsewhere
		{stripped, app, "relative/path", ""},              // relative to the request: already right
		{stripped, tlsApp, "http://127.0.0.1:9000/x", "https://gw.example.com/hb/x"},
		{stripped, unixApp, "http://127.0.0.1:9000/x", "/hb/x"}, // no TCP origin to name
		{based, app, "https://api.example.com/v1/items/2", "http://127.0.0.1:8080/ex/items/2"},
		{based, app, "https://API.example.com:443/v1/items", "http://127.0.0.1:8080/ex/items"},
		{based, app, "https://api.example.com/v1", "http://127.0.0.1:8080/ex/"},
		{based, app, "https://api.example.com/v2/items", ""}, // outside the base path
		{based, app, "https://api.example.com/v10/items", ""},
		{based, app, "/v1/items", "/ex/items"},
		{based, app, "/other", ""},
		{plain, app, "http://up.internal:8080/login", "http://127.0.0.1:8080/login"},
		{plain, app, "/login", ""}, // the same path on both sides
		{plain, app, "http://up.internal/login", ""},
	} {
		got, changed := tc.rt.mapLocation(nil, []byte(tc.in), tc.x)
		if want := tc.want; changed != (want != "") || changed && string(got) != want {
			t.Errorf("%s: mapLocation(%q) = %q, %v; want %q", tc.rt.upstream, tc.in, got, changed, want)
		}
	}
}

// A redirect to the upstream comes back onto the URL the app called, and a
// live secret the upstream echoes in a header is masked, whatever header
// it is in, repeated or not; other headers pass as they were.
func TestResponseHeadersFixed(t *testing.T) {
	var upURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Location", upURL+"/next")
		h.Set("Content-Location", "/doc/1")
		h.Set("X-Echo", r.Header.Get("Authorization"))
		h.Add("Link", "<https://a.example>; rel=a")
		h.Add("Link", "<https://b.example/?t="+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+">; rel=b")
		h.Add("Set-Cookie", "a=1; Path=/")
		h.Add("Set-Cookie", "t="+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+"; Path=/")
		h.Set("X-Plain", "unchanged-value")
		w.WriteHeader(http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	upURL = srv.URL
	m, _ := telemetry.NewMetrics(telemetry.MetricsOptions{})
	px := scrubbingProxy(t, srv.URL, "tok-echoed-123", false, m)
	base := serve(t, px)
	req, _ := http.NewRequest("GET", base+"/r/x", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	if got, want := h.Get("Location"), base+"/r/next"; got != want {
		t.Errorf("Location %q, want %q", got, want)
	}
	if got := h.Get("Content-Location"); got != "/r/doc/1" {
		t.Errorf("Content-Location %q", got)
	}
	if got := h.Get("X-Echo"); got != "Bearer [REDACTED]" {
		t.Errorf("X-Echo %q", got)
	}
	if got := h.Values("Link"); len(got) != 2 || got[0] != "<https://a.example>; rel=a" || got[1] != "<https://b.example/?t=[REDACTED]>; rel=b" {
		t.Errorf("Link %q", got)
	}
	if got := strings.Join(h.Values("Set-Cookie"), " | "); strings.Contains(got, "tok-echoed") || !strings.Contains(got, "a=1") {
		t.Errorf("Set-Cookie %q", got)
	}
	if h.Get("X-Plain") != "unchanged-value" {
		t.Errorf("X-Plain %q", h.Get("X-Plain"))
	}
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, "tok-echoed") {
				t.Errorf("the credential reached the app in %s: %q", k, v)
			}
		}
	}
	if n := m.SecretsScrubbed("r").Value(); n != 3 {
		t.Errorf("scrubbed %d values, want 3", n)
	}
}

// With scrub_body, live secrets in text bodies are masked, in bodies read
// whole and in streamed ones, also where a secret spans two reads; other
// bodies pass as they are, and an encoded text body is refused.
func TestScrubBody(t *testing.T) {
	const tok = "tok-in-the-body-42"
	var sawEncoding atomic.Pointer[string]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ae := r.Header.Get("Accept-Encoding")
		sawEncoding.Store(&ae)
		switch r.URL.Path {
		case "/json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"token":%q}`, tok)
		case "/big":
			w.Header().Set("Content-Type", "text/plain")
			pad := strings.Repeat("x", 100<<10-7) // the token spans the first 32 KiB reads' ends somewhere
			fmt.Fprint(w, pad+tok+pad+tok)
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			f := w.(http.Flusher)
			fmt.Fprint(w, "data: "+tok[:7])
			f.Flush()
			time.Sleep(50 * time.Millisecond) // the secret arrives in two pieces
			fmt.Fprint(w, tok[7:]+"\n\ndata: next\n\n")
			f.Flush()
		case "/binary":
			w.Header().Set("Content-Type", "application/octet-stream")
			fmt.Fprint(w, tok)
		case "/gzip":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Encoding", "gzip")
			fmt.Fprint(w, "\x1f\x8b...")
		}
	}))
	t.Cleanup(srv.Close)
	px := scrubbingProxy(t, srv.URL, tok, true, nil)
	base := serve(t, px)
	fetch := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/r"+path, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, b := fetch("/json"); status != 200 || b != `{"token":"[REDACTED]"}` {
		t.Errorf("json: %d %q", status, b)
	}
	if *sawEncoding.Load() != "identity" {
		t.Errorf("the upstream was asked for %q, want identity", *sawEncoding.Load())
	}
	if status, b := fetch("/big"); status != 200 || strings.Contains(b, tok) || strings.Count(b, "[REDACTED]") != 2 {
		t.Errorf("big: %d, %d masks, token present %v", status, strings.Count(b, "[REDACTED]"), strings.Contains(b, tok))
	}
	if status, b := fetch("/sse"); status != 200 || b != "data: [REDACTED]\n\ndata: next\n\n" {
		t.Errorf("sse: %d %q", status, b)
	}
	if status, b := fetch("/binary"); status != 200 || b != tok {
		t.Errorf("binary: %d %q (not text: passed as it is)", status, b)
	}
	if status, b := fetch("/gzip"); status != 502 || !strings.Contains(b, "upstream_body_encoded") {
		t.Errorf("gzip: %d %q", status, b)
	}
}

// scrubbingProxy is a proxy with one bearer route /r/ to upstream, injecting
// tok, with a redactor that knows tok; scrubBody sets the route's
// scrub_body.
func scrubbingProxy(t *testing.T, upstream, tok string, scrubBody bool, m *telemetry.Metrics) *Proxy {
	t.Helper()
	u, _ := url.Parse(upstream)
	red := telemetry.NewRedactor()
	e := &env{}
	e.set("TOKEN", tok)
	set, err := injector.NewSet([]config.Credential{{Name: "cred", Source: "env", EnvName: "TOKEN"}},
		injector.SetOptions{Secrets: red, NewSource: func(config.Credential) (injector.Source, error) {
			return &injector.EnvSource{Name: "TOKEN", Lookup: e.lookup}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Holder("cred").Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	px, err := New(&config.Config{Routes: []config.Route{{Name: "r", PathPrefix: "/r/", Upstream: u, StripPrefix: true,
		Timeout: 5 * time.Second, ScrubBody: scrubBody, Inject: &config.Inject{Credential: "cred", As: "bearer"}}}}, set,
		Options{Scrub: red, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return px
}
