package proxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

// vars is an environment the test changes at will.
type vars struct {
	mu sync.Mutex
	m  map[string]string
}

func (v *vars) set(k, val string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m[k] = val
}

func (v *vars) lookup(k string) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	val, ok := v.m[k]
	return val, ok && val != ""
}

// callerProxy is a proxy built from cfg as the daemon builds it: every
// credential and caller token held in one set, each read from env.
type callerProxy struct {
	px      *Proxy
	set     *injector.Set
	env     *vars
	metrics *telemetry.Metrics
	base    string
}

func startCallerProxy(t *testing.T, cfg *config.Config, env map[string]string) *callerProxy {
	t.Helper()
	cp := &callerProxy{env: &vars{m: maps.Clone(env)}} // a test may change its own
	set, err := injector.NewSet(cfg.Held(), injector.SetOptions{NewSource: func(c config.Credential) (injector.Source, error) {
		return &injector.EnvSource{Name: c.EnvName, Lookup: cp.env.lookup}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	cp.set = set
	for _, name := range set.Names() {
		_ = set.Holder(name).Refresh(context.Background())
	}
	if cp.metrics, err = telemetry.NewMetrics(telemetry.MetricsOptions{}); err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.NewNullLogger()
	if cp.px, err = New(cfg, set, Options{Log: log, Metrics: cp.metrics}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cp.px.Serve(ln) }()
	t.Cleanup(func() { _ = cp.px.Shutdown(context.Background()) })
	cp.base = "http://" + ln.Addr().String()
	return cp
}

// do sends one request with headers given as name, value pairs and returns
// the status, the error code of a JSON error body, and the answer.
func (cp *callerProxy) do(t *testing.T, method, path string, hdr ...string) (int, string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, cp.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error, resp
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func callerConfig(up *url.URL) *config.Config {
	ref := func(name string) *config.Ref { return &config.Ref{Kind: config.RefEnv, Name: name} }
	return &config.Config{
		Callers: []config.Caller{
			{Name: "ci-runner", Token: ref("CI_TOKEN"), UID: -1},
			{Name: "deploy", Token: ref("DEPLOY_TOKEN"), UID: -1},
		},
		Credentials: []config.Credential{
			{Name: "cred", Source: "env", EnvName: "TOKEN"},
			{Name: "ci-cred", Source: "env", EnvName: "CI_UPSTREAM"},
		},
		Routes: []config.Route{
			testRoute("bearer", "/b/", up, &config.Inject{Credential: "cred", As: "bearer",
				ByCaller: map[string]string{"ci-runner": "ci-cred"}}),
			testRoute("query", "/q/", up, &config.Inject{Credential: "cred", As: "query", Param: "api_key"}),
			testRoute("hdr", "/h/", up, &config.Inject{Credential: "cred", As: "header", Header: "Authorization", Format: "token %s"}),
			testRoute("basic", "/basic/", up, &config.Inject{Credential: "cred", As: "basic", Username: "bot"}),
			{Name: "deploy-only", PathPrefix: "/d/", Upstream: up, StripPrefix: true, Timeout: 5 * time.Second,
				Inject: &config.Inject{Credential: "cred", As: "bearer"}, Callers: []string{"deploy"}},
		},
	}
}

var callerEnv = map[string]string{
	"CI_TOKEN": "ci-caller-token", "DEPLOY_TOKEN": "deploy-caller-token",
	"TOKEN": "upstream-token", "CI_UPSTREAM": "ci-upstream-token",
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// A caller token is accepted in each place a caller may send it, never
// reaches the upstream, and the upstream gets the route's credential —
// the caller's own one where by_caller says so.
func TestCallerTokenPlaces(t *testing.T) {
	up, u := newUpstream(t)
	cp := startCallerProxy(t, callerConfig(u), callerEnv)
	for _, tc := range []struct {
		name, path string
		hdr        []string
		wantAuth   string // Authorization the upstream sees
		wantURI    string
	}{
		{"bearer place, by_caller", "/b/x", []string{"Authorization", "Bearer ci-caller-token"}, "Bearer ci-upstream-token", "/x"},
		{"bearer place, default credential", "/b/x", []string{"Authorization", "Bearer deploy-caller-token"}, "Bearer upstream-token", "/x"},
		{"Proxy-Authorization Bearer", "/b/x", []string{"Proxy-Authorization", "Bearer deploy-caller-token"}, "Bearer upstream-token", "/x"},
		{"Proxy-Authorization Basic", "/b/x", []string{"Proxy-Authorization", basic("ci-runner", "ci-caller-token")}, "Bearer ci-upstream-token", "/x"},
		{"header place with its format", "/h/x", []string{"Authorization", "token deploy-caller-token"}, "token upstream-token", "/x"},
		{"header place, bare value", "/h/x", []string{"Authorization", "deploy-caller-token"}, "token upstream-token", "/x"},
		{"query place", "/q/x?api_key=deploy-caller-token&y=1", nil, "", "/x?y=1&api_key=upstream-token"},
		{"basic place", "/basic/x", []string{"Authorization", basic("anyone", "deploy-caller-token")}, basic("bot", "upstream-token"), "/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.hits.Load()
			if status, code, _ := cp.do(t, "GET", tc.path, tc.hdr...); status != 200 {
				t.Fatalf("status %d %s", status, code)
			}
			if up.hits.Load() != before+1 {
				t.Fatal("the upstream was not reached once")
			}
			h := *up.header.Load()
			if got := h.Get("Authorization"); got != tc.wantAuth {
				t.Errorf("upstream Authorization %q, want %q", got, tc.wantAuth)
			}
			if got := *up.uri.Load(); got != tc.wantURI {
				t.Errorf("upstream URI %q, want %q", got, tc.wantURI)
			}
			for k, vs := range h {
				for _, v := range vs {
					if strings.Contains(v, "caller-token") {
						t.Errorf("the caller token reached the upstream in %s", k)
					}
				}
			}
			if strings.Contains(*up.uri.Load(), "caller-token") {
				t.Error("the caller token reached the upstream in the query")
			}
		})
	}
}

// Missing, wrong and unlisted callers are refused before any credential is
// used; nothing reaches the upstream, and each refusal is counted.
func TestCallersRefused(t *testing.T) {
	up, u := newUpstream(t)
	cp := startCallerProxy(t, callerConfig(u), callerEnv)
	for _, tc := range []struct {
		name, path string
		hdr        []string
		status     int
		code       string
	}{
		{"no caller", "/b/x", nil, 401, codeUnauthn},
		{"wrong token in the place", "/b/x", []string{"Authorization", "Bearer guess"}, 401, codeUnauthn},
		{"an upstream credential is no caller token", "/b/x", []string{"Authorization", "Bearer upstream-token"}, 401, codeUnauthn},
		{"wrong Proxy-Authorization", "/b/x", []string{"Proxy-Authorization", "Bearer guess", "Authorization", "Bearer ci-caller-token"}, 401, codeUnauthn},
		{"Proxy-Authorization of another scheme", "/b/x", []string{"Proxy-Authorization", "Digest ci-caller-token"}, 401, codeUnauthn},
		{"Basic without the token as password", "/b/x", []string{"Proxy-Authorization", basic("ci-caller-token", "")}, 401, codeUnauthn},
		{"a prefix of a token", "/b/x", []string{"Authorization", "Bearer ci-caller-toke"}, 401, codeUnauthn},
		{"not among the route's callers", "/d/x", []string{"Authorization", "Bearer ci-caller-token"}, 403, codeCallerRefused},
		{"no caller on a route with callers", "/d/x", nil, 401, codeUnauthn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code, resp := cp.do(t, "GET", tc.path, tc.hdr...)
			if status != tc.status || code != tc.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tc.status, tc.code)
			}
			if status == 401 && resp.Header.Get("WWW-Authenticate") != `Bearer realm="sidekey"` {
				t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := up.hits.Load(); n != 0 {
		t.Fatalf("%d refused requests reached the upstream", n)
	}
	if n := cp.metrics.CallersRefused(codeUnauthn).Value(); n != 8 {
		t.Errorf("refused as unauthenticated: %d, want 8", n)
	}
	if n := cp.metrics.CallersRefused(codeCallerRefused).Value(); n != 1 {
		t.Errorf("refused as not allowed: %d, want 1", n)
	}
	if status, _, _ := cp.do(t, "GET", "/d/x", "Authorization", "Bearer deploy-caller-token"); status != 200 {
		t.Fatalf("the listed caller: %d", status)
	}
	infos := map[string]CallerInfo{}
	for _, in := range cp.px.Callers() {
		infos[in.Name] = in
	}
	if ci := infos["ci-runner"]; ci.Kind != "token" || ci.Refused != 1 || ci.Requests != 0 {
		t.Errorf("ci-runner: %+v", ci)
	}
	if d := infos["deploy"]; d.Requests != 1 || d.LastSeen.IsZero() {
		t.Errorf("deploy: %+v", d)
	}
}

// A caller token follows its source: the new value is accepted at once and
// the old one refused.
func TestCallerTokenRotation(t *testing.T) {
	_, u := newUpstream(t)
	cp := startCallerProxy(t, callerConfig(u), callerEnv)
	if status, _, _ := cp.do(t, "GET", "/b/x", "Authorization", "Bearer ci-caller-token"); status != 200 {
		t.Fatalf("before: %d", status)
	}
	cp.env.set("CI_TOKEN", "ci-caller-token-2")
	if err := cp.set.Holder("caller:ci-runner").Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := cp.do(t, "GET", "/b/x", "Authorization", "Bearer ci-caller-token-2"); status != 200 {
		t.Errorf("new token: %d", status)
	}
	if status, code, _ := cp.do(t, "GET", "/b/x", "Authorization", "Bearer ci-caller-token"); status != 401 {
		t.Errorf("old token: %d %s", status, code)
	}
}

// With allow_anonymous, a request without a caller is admitted (to routes
// that list no callers); a wrong token in the injected place is ignored
// there, as the app's own stale key, but a wrong Proxy-Authorization is
// still refused.
func TestAnonymousAllowed(t *testing.T) {
	_, u := newUpstream(t)
	cfg := callerConfig(u)
	cfg.AllowAnonymous = true
	cp := startCallerProxy(t, cfg, callerEnv)
	for _, tc := range []struct {
		path   string
		hdr    []string
		status int
	}{
		{"/b/x", nil, 200},
		{"/b/x", []string{"Authorization", "Bearer stale-app-key"}, 200},
		{"/b/x", []string{"Proxy-Authorization", "Bearer guess"}, 401},
		{"/d/x", nil, 401},
	} {
		if status, code, _ := cp.do(t, "GET", tc.path, tc.hdr...); status != tc.status {
			t.Errorf("%s %v: %d %s, want %d", tc.path, tc.hdr, status, code, tc.status)
		}
	}
}

// The Host and browser defence refuses what a web page could make a browser
// send, before routing; none of it reaches the upstream.
func TestBrowserDefence(t *testing.T) {
	up, u := newUpstream(t)
	e := &env{}
	e.set("TOKEN", "tok")
	m, err := telemetry.NewMetrics(telemetry.MetricsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	px, err := New(&config.Config{
		Routes:         []config.Route{testRoute("bearer", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"})},
		AllowedOrigins: []string{"https://app.example.com"},
	}, testSet(t, e), Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	cp := &callerProxy{px: px, base: serve(t, px)}
	for _, tc := range []struct {
		name   string
		method string
		hdr    []string
		status int
		code   string
	}{
		{"DNS rebinding", "GET", []string{"Host", "rebind.attacker.example"}, 421, codeHostNotAllowed},
		{"rebinding with a port", "GET", []string{"Host", "rebind.attacker.example:8080"}, 421, codeHostNotAllowed},
		{"cross-site fetch", "POST", []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, codeCrossOrigin},
		{"Sec-Fetch-Site alone", "GET", []string{"Sec-Fetch-Site", "cross-site"}, 403, codeCrossOrigin},
		{"same-site is not same-origin", "GET", []string{"Sec-Fetch-Site", "same-site"}, 403, codeCrossOrigin},
		{"foreign Origin alone", "POST", []string{"Origin", "http://localhost:3000"}, 403, codeCrossOrigin},
		{"preflight", "OPTIONS", []string{"Origin", "https://evil.example", "Access-Control-Request-Method", "POST"}, 403, codeCrossOrigin},
		{"typed in the address bar", "GET", []string{"Sec-Fetch-Site", "none"}, 200, ""},
		{"a loopback name", "GET", []string{"Host", "localhost"}, 200, ""},
		{"a *.localhost name", "GET", []string{"Host", "my-app.localhost:8080"}, 200, ""},
		{"own origin", "POST", []string{"Host", "127.0.0.1:8080", "Origin", "http://127.0.0.1:8080", "Sec-Fetch-Site", "same-origin"}, 200, ""},
		{"allowed origin", "GET", []string{"Origin", "https://app.example.com", "Sec-Fetch-Site", "cross-site"}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.hits.Load()
			status, code, resp := cp.do(t, tc.method, "/b/x", tc.hdr...)
			if status != tc.status || code != tc.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tc.status, tc.code)
			}
			reached := up.hits.Load() > before
			if reached != (status == 200) {
				t.Fatalf("reached the upstream: %v, with status %d", reached, status)
			}
			if tc.name == "allowed origin" && resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
				t.Errorf("Access-Control-Allow-Origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
			}
		})
	}
	// A preflight from an allowed origin is answered by sidekey itself.
	before := up.hits.Load()
	status, _, resp := cp.do(t, "OPTIONS", "/b/x", "Origin", "https://app.example.com",
		"Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "content-type")
	if status != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "PUT" || resp.Header.Get("Access-Control-Allow-Headers") != "content-type" ||
		up.hits.Load() != before {
		t.Errorf("allowed preflight: %d %v, upstream hits %d", status, resp.Header, up.hits.Load()-before)
	}
	if n := m.CallersRefused(codeHostNotAllowed).Value(); n != 2 {
		t.Errorf("host refusals counted %d, want 2", n)
	}
	if n := m.CallersRefused(codeCrossOrigin).Value(); n != 5 {
		t.Errorf("cross-origin refusals counted %d, want 5", n)
	}
}

// On a unix socket, the peer's uid names the caller.
func TestUIDCaller(t *testing.T) {
	_, u := newUpstream(t)
	for _, tc := range []struct {
		uid    int
		status int
	}{{os.Getuid(), 200}, {os.Getuid() + 1, 401}} {
		cfg := &config.Config{
			Listen:      "unix:" + filepath.Join(t.TempDir(), "s"),
			Callers:     []config.Caller{{Name: "me", UID: tc.uid}},
			Credentials: []config.Credential{{Name: "cred", Source: "env", EnvName: "TOKEN"}},
			Routes:      []config.Route{testRoute("bearer", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"})},
		}
		cp := startCallerProxy(t, cfg, map[string]string{"TOKEN": "tok"})
		sock := strings.TrimPrefix(cfg.Listen, config.UnixPrefix)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = cp.px.Serve(ln) }()
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
		resp, err := client.Get("http://localhost/b/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("uid caller %d, peer %d: status %d, want %d", tc.uid, os.Getuid(), resp.StatusCode, tc.status)
		}
	}
}

// testSet holds the one env-backed credential "cred" of the older tests.
func testSet(t *testing.T, e *env) *injector.Set {
	t.Helper()
	set, err := injector.NewSet([]config.Credential{{Name: "cred", Source: "env", EnvName: "TOKEN"}},
		injector.SetOptions{NewSource: func(config.Credential) (injector.Source, error) {
			return &injector.EnvSource{Name: "TOKEN", Lookup: e.lookup}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Holder("cred").Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return set
}

// serve serves px on a loopback port until the test ends.
func serve(t *testing.T, px *Proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = px.Serve(ln) }()
	t.Cleanup(func() { _ = px.Shutdown(context.Background()) })
	return "http://" + ln.Addr().String()
}
