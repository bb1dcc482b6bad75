package e2e

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// The tests of callers (who may use sidekey's credentials): the Host and
// browser defence, caller tokens in every place they may be carried, the
// refusals, rotation of a caller token, by_caller, unix-socket peers, the
// admin API, metrics, spans and `sidekey status`. Client certificates are
// tested with Pebble in ./acme.

const bearerTok = "{credential: tok, as: bearer}"

// defenceCase is one request against the Host and browser defence.
type defenceCase struct {
	name   string
	method string // default GET
	path   string // default /app/ID
	hdr    []string
	status int    // 200 must reach to (default the app's upstream); any other status no upstream
	code   string // the JSON error of a refusal
	acao   string // the Access-Control-Allow-Origin wanted; "" none
	to     *upstream
}

// runDefence sends each case with its own X-Test-Id and checks the answer
// and which upstream, if any, got it. It returns how many cases were
// refused, by error code.
func runDefence(t *testing.T, p *proc, app *upstream, all []*upstream, cases []defenceCase) map[string]int {
	refused := map[string]int{}
	for _, c := range cases {
		if c.code != "" {
			refused[c.code]++
		}
		t.Run(c.name, func(t *testing.T) {
			id := nextID()
			method, path := c.method, c.path
			if method == "" {
				method = http.MethodGet
			}
			if path == "" {
				path = "/app/" + id
			}
			resp, body, err := p.send(t, method, p.ProxyURL+path, nil, append([]string{"X-Test-Id", id}, c.hdr...)...)
			if err != nil {
				t.Fatal(err)
			}
			if c.code != "" {
				wantRefusal(t, resp, body, c.status, c.code)
			} else if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d; body %q", resp.StatusCode, c.status, maskSecrets(string(body)))
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != c.acao {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, c.acao)
			}
			if c.acao != "" && !slices.Contains(resp.Header.Values("Vary"), "Origin") {
				t.Errorf("an answer to an allowed origin has Vary %q, want Origin among them", resp.Header.Values("Vary"))
			}
			want := c.to
			if want == nil && c.status == http.StatusOK {
				want = app
			}
			for _, u := range all {
				_, got := u.byID(id)
				switch {
				case u == want && !got:
					t.Errorf("the upstream %s did not get the admitted request", u.URL)
				case u != want && got:
					t.Errorf("the upstream %s got a request that should not reach it", u.URL)
				}
			}
		})
	}
	return refused
}

// TestBrowserDefence: a foreign Host is refused with 421 (DNS rebinding),
// a browser request from another site with 403, CORS preflights too; the
// loopback names and addresses, route hosts and allowed_hosts are
// admitted, and so are the listener's own origin, allowed_origins (whose
// answers say so, and whose preflights sidekey answers itself) and
// Sec-Fetch-Site: none. No refused request reaches an upstream, and each
// refusal counts in sidekey_callers_refused_total{reason}.
func TestBrowserDefence(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	path := filepath.Join(dir, "tok")
	writeSecretFile(t, path, secretValue(t))
	app, routed := newUpstream(t, nil), newUpstream(t, nil)
	const allowed = "https://app.example.com"
	p := startSidekey(t, configYAML(
		[]string{`allowed_hosts: [api.example.com, "*.corp.example"]`, `allowed_origins: ["` + allowed + `"]`},
		[]string{fileCred("tok", path)},
		[]route{
			{name: "app", prefix: "/app/", upstream: app.URL, strip: true, inject: bearerTok},
			{name: "routed", host: "routed.example", upstream: routed.URL, inject: bearerTok},
		}))
	waitOK(t, p, "/app/ready")
	before := scrape(t, p)
	forwardedBefore := app.count() + routed.count()
	_, port := splitPort(t, p.ProxyAddr)
	own := p.ProxyAddr
	const (
		hostRefused  = "host_not_allowed"
		crossRefused = "cross_origin_refused"
	)
	host := func(h string) []string { return []string{"Host", h} }
	fromOwn := func(kv ...string) []string { return append([]string{"Host", own}, kv...) }
	preflight := func(origin string, kv ...string) []string {
		return append(fromOwn("Origin", origin, "Access-Control-Request-Method", "PUT",
			"Access-Control-Request-Headers", "x-custom"), kv...)
	}

	cases := []defenceCase{
		// Host
		{name: "foreign host", hdr: host("evil.example"), status: 421, code: hostRefused},
		{name: "foreign host with the listener's port", hdr: host("evil.example:" + port), status: 421, code: hostRefused},
		{name: "rebinding name ending in localhost's label", hdr: host("localhost.evil.example"), status: 421, code: hostRefused},
		{name: "apex of an allowed suffix", hdr: host("corp.example"), status: 421, code: hostRefused},
		{name: "private address", hdr: host("10.1.2.3:" + port), status: 421, code: hostRefused},
		{name: "foreign host with an allowed origin", hdr: []string{"Host", "evil.example", "Origin", allowed}, status: 421, code: hostRefused},
		{name: "localhost", hdr: host("localhost:" + port), status: 200},
		{name: "localhost without a port", hdr: host("localhost"), status: 200},
		{name: "localhost in upper case", hdr: host("LocalHost:" + port), status: 200},
		{name: "a name under localhost", hdr: host("app.localhost:" + port), status: 200},
		{name: "the listener's address", hdr: host(own), status: 200},
		{name: "another 127/8 address", hdr: host("127.1.2.3:" + port), status: 200},
		{name: "IPv6 loopback", hdr: host("[::1]:" + port), status: 200},
		{name: "allowed host", hdr: host("api.example.com"), status: 200},
		{name: "allowed host with a port", hdr: host("api.example.com:" + port), status: 200},
		{name: "allowed suffix", hdr: host("ci.corp.example"), status: 200},
		{name: "route host", path: "/anything", hdr: host("routed.example"), status: 200, to: routed},

		// Sec-Fetch-Site and Origin
		{name: "Sec-Fetch-Site cross-site", hdr: fromOwn("Sec-Fetch-Site", "cross-site"), status: 403, code: crossRefused},
		{name: "Sec-Fetch-Site same-site", hdr: fromOwn("Sec-Fetch-Site", "same-site"), status: 403, code: crossRefused},
		{name: "Sec-Fetch-Site same-origin", hdr: fromOwn("Sec-Fetch-Site", "same-origin"), status: 200},
		{name: "Sec-Fetch-Site none", hdr: fromOwn("Sec-Fetch-Site", "none"), status: 200},
		{name: "foreign Origin", hdr: fromOwn("Origin", "https://evil.example"), status: 403, code: crossRefused},
		{name: "foreign Origin on a route host", path: "/x", hdr: []string{"Host", "routed.example", "Origin", "https://evil.example"}, status: 403, code: crossRefused},
		{name: "Origin null", hdr: fromOwn("Origin", "null"), status: 403, code: crossRefused},
		{name: "Origin with the other scheme", hdr: fromOwn("Origin", "https://"+own), status: 403, code: crossRefused},
		{name: "Origin of another loopback name", hdr: []string{"Host", "localhost:" + port, "Origin", "http://" + own}, status: 403, code: crossRefused},
		{name: "the listener's own origin", hdr: fromOwn("Origin", "http://"+own), status: 200},
		{name: "own origin under localhost", hdr: []string{"Host", "localhost:" + port, "Origin", "http://localhost:" + port}, status: 200},
		{name: "own origin with Sec-Fetch-Site same-origin", hdr: fromOwn("Origin", "http://"+own, "Sec-Fetch-Site", "same-origin"), status: 200},
		{name: "allowed origin", hdr: fromOwn("Origin", allowed), status: 200, acao: allowed},
		{name: "allowed origin sent cross-site", hdr: fromOwn("Origin", allowed, "Sec-Fetch-Site", "cross-site"), status: 200, acao: allowed},

		// CORS preflights
		{name: "preflight from a foreign origin", method: http.MethodOptions, hdr: preflight("https://evil.example"), status: 403, code: crossRefused},
		{name: "preflight from a foreign origin sent cross-site", method: http.MethodOptions,
			hdr: preflight("https://evil.example", "Sec-Fetch-Site", "cross-site"), status: 403, code: crossRefused},
		{name: "preflight from null", method: http.MethodOptions, hdr: preflight("null"), status: 403, code: crossRefused},
		{name: "preflight with a foreign Host", method: http.MethodOptions,
			hdr: []string{"Host", "evil.example", "Origin", allowed, "Access-Control-Request-Method", "PUT"}, status: 421, code: hostRefused},
		// Answered by sidekey itself: it reaches no upstream.
		{name: "preflight from an allowed origin", method: http.MethodOptions, hdr: preflight(allowed), status: 204, acao: allowed},
	}
	refused := runDefence(t, p, app, []*upstream{app, routed}, cases)

	t.Run("preflight answer", func(t *testing.T) {
		resp, body, err := p.send(t, http.MethodOptions, p.ProxyURL+"/app/pre", nil, preflight(allowed)...)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
			t.Fatalf("status %d body %q, want 204 and no body", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "PUT") {
			t.Errorf("Access-Control-Allow-Methods %q, want PUT among them", got)
		}
		if got := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "x-custom") {
			t.Errorf("Access-Control-Allow-Headers %q, want x-custom among them", got)
		}
	})

	// Absolute form and CONNECT skip the Host check, and routing refuses
	// them unless they are for a route's host.
	raw := []struct {
		name   string
		req    string
		status int
		to     *upstream
	}{
		{"absolute form for a foreign host", "GET http://evil.example/app/%s HTTP/1.1\r\nHost: evil.example\r\n", 403, nil},
		{"absolute form for a route host", "GET http://routed.example/%s HTTP/1.1\r\nHost: routed.example\r\n", 200, routed},
		{"CONNECT to a foreign host", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n", 0, nil},
	}
	for _, c := range raw {
		t.Run(c.name, func(t *testing.T) {
			id := nextID()
			req := c.req
			if strings.Contains(req, "%s") {
				req = fmt.Sprintf(req, id)
			}
			resp, body, err := rawExchange(t, p.ProxyAddr, req+"X-Test-Id: "+id+"\r\n\r\n")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.status == 0 && (resp.StatusCode < 400 || resp.StatusCode > 499):
				t.Errorf("status %d, want a 4xx refusal; body %q", resp.StatusCode, body)
			case c.status != 0 && resp.StatusCode != c.status:
				t.Errorf("status %d, want %d; body %q", resp.StatusCode, c.status, body)
			}
			for _, u := range []*upstream{app, routed} {
				if _, got := u.byID(id); got != (u == c.to) {
					t.Errorf("upstream %s got the request: %v, want %v", u.URL, got, u == c.to)
				}
			}
		})
	}

	t.Run("nothing refused reached an upstream", func(t *testing.T) {
		admitted := 0
		for _, c := range cases {
			if c.status == http.StatusOK {
				admitted++
			}
		}
		admitted++ // the absolute-form request for the route host
		if got := app.count() + routed.count() - forwardedBefore; got != admitted {
			t.Errorf("the upstreams got %d requests, want the %d admitted ones", got, admitted)
		}
	})

	t.Run("refusals counted", func(t *testing.T) {
		after := scrape(t, p)
		for _, reason := range refusalReasons {
			got := refusedTotal(t, after, reason) - refusedTotal(t, before, reason)
			if int(got) != refused[reason] {
				t.Errorf("sidekey_callers_refused_total{reason=%q} rose by %v, want %d", reason, got, refused[reason])
			}
		}
	})
}

// TestBrowserDefenceOwnAddress: on a listener bound to a non-loopback
// address, the Host naming that address is admitted (and its own origin),
// another address of the same network is not.
func TestBrowserDefenceOwnAddress(t *testing.T) {
	t.Parallel()
	ip := nonLoopbackIPv4()
	if ip == "" {
		t.Skip("this machine has no non-loopback IPv4 address")
	}
	other := net.ParseIP(ip).To4()
	other[3] ^= 1
	dir := dataDir(t)
	path := filepath.Join(dir, "tok")
	writeSecretFile(t, path, secretValue(t))
	app := newUpstream(t, nil)
	cfg := configYAML([]string{"allow_anonymous: true"}, []string{fileCred("tok", path)},
		[]route{{name: "app", prefix: "/app/", upstream: app.URL, strip: true, inject: bearerTok}})
	p := startSidekey(t, edit(t, cfg, "listen: 127.0.0.1:0\n", "listen: "+ip+":0\n"))
	if h, _ := splitPort(t, p.ProxyAddr); h != ip {
		t.Fatalf("the proxy listens on %s, want %s", p.ProxyAddr, ip)
	}
	waitOK(t, p, "/app/ready")
	_, port := splitPort(t, p.ProxyAddr)
	before := scrape(t, p)
	own := p.ProxyAddr
	refused := runDefence(t, p, app, []*upstream{app}, []defenceCase{
		{name: "the listener's address", hdr: []string{"Host", own}, status: 200},
		{name: "the listener's address without a port", hdr: []string{"Host", ip}, status: 200},
		{name: "loopback name", hdr: []string{"Host", "localhost:" + port}, status: 200},
		{name: "the listener's own origin", hdr: []string{"Host", own, "Origin", "http://" + own}, status: 200},
		{name: "another address of the network", hdr: []string{"Host", other.String() + ":" + port}, status: 421, code: "host_not_allowed"},
		{name: "loopback origin on the network address", hdr: []string{"Host", own, "Origin", "http://127.0.0.1:" + port}, status: 403, code: "cross_origin_refused"},
	})
	after := scrape(t, p)
	for _, reason := range refusalReasons {
		if got := refusedTotal(t, after, reason) - refusedTotal(t, before, reason); int(got) != refused[reason] {
			t.Errorf("sidekey_callers_refused_total{reason=%q} rose by %v, want %d", reason, got, refused[reason])
		}
	}
}

func splitPort(t testing.TB, addr string) (host, port string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return h, p
}

// TestCallerTokens: a caller token is accepted in every place it may be
// carried — Authorization Bearer on a bearer route, the named header with
// or without its format on header routes, the named parameter on a query
// route, the Basic password on a basic route, Proxy-Authorization Bearer
// and Basic on any route — and never reaches the upstream, which gets the
// route's credential instead (by_caller: the caller's own). Missing,
// wrong and unlisted callers are refused without reaching the upstream.
// The audit lines, /v1/callers, /v1/credentials, the refusal counters and
// `sidekey status` report the callers, never a token.
func TestCallerTokens(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	ci, app, batch := secretValue(t), secretValue(t), secretValue(t)
	upTok, appOwn, pass := secretValue(t), secretValue(t), secretValue(t)
	ciPath := filepath.Join(dir, "ci-token")
	writeSecretFile(t, ciPath, ci+"\n")
	creds := map[string]string{"up": upTok, "app-own": appOwn, "pass": pass}
	var credBlocks []string
	for _, name := range []string{"up", "app-own", "pass"} {
		writeSecretFile(t, filepath.Join(dir, name), creds[name])
		credBlocks = append(credBlocks, fileCred(name, filepath.Join(dir, name)))
	}
	// Every form in which a caller token is sent, for the leak checks.
	tokens := []string{ci, app, batch,
		strings.TrimPrefix(basicAuth(t, "ci", ci), "Basic "),
		strings.TrimPrefix(basicAuth(t, "anyone", ci), "Basic "),
		strings.TrimPrefix(basicAuth(t, "batch", batch), "Basic ")}
	upBasic := basicAuth(t, "svc", pass)

	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"callers:",
			"  ci:", "    token: " + quote("file:"+ciPath),
			"  app:", "    token: env:E2E_CALLER_APP",
			"  batch:", "    token: env:E2E_CALLER_BATCH"},
		credBlocks,
		[]route{
			{name: "bearer", prefix: "/b/", upstream: up.URL, strip: true, inject: "{credential: up, as: bearer}"},
			{name: "header", prefix: "/h/", upstream: up.URL, strip: true, inject: `{credential: up, as: header, header: X-Api-Key, format: "token %s"}`},
			{name: "rawheader", prefix: "/hr/", upstream: up.URL, strip: true, inject: "{credential: up, as: header, header: X-Api-Key}"},
			{name: "query", prefix: "/q/", upstream: up.URL, strip: true, inject: "{credential: up, as: query, param: api_key}"},
			{name: "basic", prefix: "/ba/", upstream: up.URL, strip: true, inject: "{credential: pass, as: basic, username: svc}"},
			{name: "ci-only", prefix: "/ci/", upstream: up.URL, strip: true, inject: "{credential: up, as: bearer}", extra: []string{"callers: [ci]"}},
			{name: "by-caller", prefix: "/bc/", upstream: up.URL, strip: true, inject: "{credential: up, as: bearer, by_caller: {app: app-own}}"},
		}),
		withEnv("E2E_CALLER_APP="+app, "E2E_CALLER_BATCH="+batch))
	waitOKWith(t, p, "/b/ready", "Proxy-Authorization", "Bearer "+ci)
	waitOKWith(t, p, "/ba/ready", "Proxy-Authorization", "Bearer "+ci)
	waitOKWith(t, p, "/bc/ready", "Proxy-Authorization", "Bearer "+app)
	baseline := callersOf(t, p)
	baseMetrics := scrape(t, p)
	start := time.Now()

	wantHeader := func(name, want string) func(*testing.T, seenRequest) {
		return func(t *testing.T, seen seenRequest) {
			t.Helper()
			if got := seen.Header.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("the upstream's %s = %q, want exactly the route's credential", name, maskSecrets(fmt.Sprint(got)))
			}
		}
	}
	wantQuery := func(t *testing.T, seen seenRequest) {
		t.Helper()
		q, err := url.ParseQuery(seen.RawQuery)
		if err != nil {
			t.Fatal(err)
		}
		if got := q["api_key"]; len(got) != 1 || got[0] != upTok {
			t.Errorf("the upstream's api_key = %q, want exactly the route's credential", maskSecrets(fmt.Sprint(got)))
		}
		if got := q["keep"]; len(got) != 1 || got[0] != "1" {
			t.Errorf("the upstream's keep = %q, want [1]", got)
		}
	}
	bearerUp := wantHeader("Authorization", "Bearer "+upTok)
	headerUp := wantHeader("X-Api-Key", "token "+upTok)

	admitted := []struct {
		name, path, query string
		hdr               []string
		caller            string
		credential        string
		check             func(*testing.T, seenRequest)
	}{
		{"bearer route, Authorization Bearer", "/b/", "", []string{"Authorization", "Bearer " + ci}, "ci", "up", bearerUp},
		{"bearer route, another caller", "/b/", "", []string{"Authorization", "Bearer " + app}, "app", "up", bearerUp},
		{"header route, header with its format", "/h/", "", []string{"X-Api-Key", "token " + ci}, "ci", "up", headerUp},
		{"header route, header without its format", "/h/", "", []string{"X-Api-Key", ci}, "ci", "up", headerUp},
		{"header route without a format", "/hr/", "", []string{"X-Api-Key", ci}, "ci", "up", wantHeader("X-Api-Key", upTok)},
		{"query route, the parameter", "/q/", "?api_key=" + ci + "&keep=1", nil, "ci", "up", wantQuery},
		{"basic route, Basic password", "/ba/", "", []string{"Authorization", basicAuth(t, "ci", ci)}, "ci", "pass", wantHeader("Authorization", upBasic)},
		{"basic route, any user name", "/ba/", "", []string{"Authorization", basicAuth(t, "anyone", ci)}, "ci", "pass", wantHeader("Authorization", upBasic)},
		{"Proxy-Authorization Bearer", "/b/", "", []string{"Proxy-Authorization", "Bearer " + ci}, "ci", "up", bearerUp},
		{"Proxy-Authorization Basic", "/h/", "", []string{"Proxy-Authorization", basicAuth(t, "ci", ci)}, "ci", "up", headerUp},
		{"Proxy-Authorization on a query route", "/q/", "?keep=1", []string{"Proxy-Authorization", "Bearer " + batch}, "batch", "up", wantQuery},
		{"Proxy-Authorization beside the app's own Authorization", "/b/", "", []string{"Proxy-Authorization", "Bearer " + ci, "Authorization", "Bearer app-chosen"}, "ci", "up", bearerUp},
		{"listed caller", "/ci/", "", []string{"Authorization", "Bearer " + ci}, "ci", "up", bearerUp},
		{"by_caller: the caller's own credential", "/bc/", "", []string{"Authorization", "Bearer " + app}, "app", "app-own", wantHeader("Authorization", "Bearer "+appOwn)},
		{"by_caller: another caller gets the route's", "/bc/", "", []string{"Proxy-Authorization", "Bearer " + ci}, "ci", "up", bearerUp},
	}
	requests := map[string]uint64{}
	for _, c := range admitted {
		requests[c.caller]++
		t.Run(c.name, func(t *testing.T) {
			id := nextID()
			resp, body := p.get(t, c.path+id+c.query, append([]string{"X-Test-Id", id}, c.hdr...)...)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200; body %q", resp.StatusCode, maskSecrets(string(body)))
			}
			seen, ok := up.byID(id)
			if !ok {
				t.Fatal("the upstream did not get the request")
			}
			if leaks := leakedInto(seen, tokens...); len(leaks) > 0 {
				t.Errorf("a caller token reached the upstream in: %s", strings.Join(leaks, ", "))
			}
			if v := seen.Header.Values("Proxy-Authorization"); len(v) > 0 {
				t.Errorf("the upstream got Proxy-Authorization")
			}
			c.check(t, seen)
			line := auditLineFor(t, p, id)
			if line["caller"] != c.caller || line["credential"] != c.credential || line["protocol"] != "HTTP/1.1" {
				t.Errorf("audit line caller %v, credential %v, protocol %v; want %s, %s, HTTP/1.1",
					line["caller"], line["credential"], line["protocol"], c.caller, c.credential)
			}
		})
	}

	const (
		unauthn    = "caller_unauthenticated"
		notAllowed = "caller_not_allowed"
	)
	refusals := []struct {
		name, path, query string
		hdr               []string
		status            int
		code              string
		caller            string // the caller identified and refused, if any
	}{
		{"no token", "/b/", "", nil, 401, unauthn, ""},
		{"wrong bearer token", "/b/", "", []string{"Authorization", "Bearer wrong-token"}, 401, unauthn, ""},
		{"empty bearer token", "/b/", "", []string{"Authorization", "Bearer "}, 401, unauthn, ""},
		{"a token with a byte more", "/b/", "", []string{"Authorization", "Bearer " + ci + "x"}, 401, unauthn, ""},
		{"a token with a byte less", "/b/", "", []string{"Authorization", "Bearer " + ci[:len(ci)-1]}, 401, unauthn, ""},
		{"a token in another place than the route's", "/b/", "", []string{"X-Api-Key", ci}, 401, unauthn, ""},
		{"a token as a parameter of a bearer route", "/b/", "?api_key=" + ci, nil, 401, unauthn, ""},
		{"a Bearer token on a header route", "/h/", "", []string{"Authorization", "Bearer " + ci}, 401, unauthn, ""},
		{"wrong header token", "/h/", "", []string{"X-Api-Key", "token wrong"}, 401, unauthn, ""},
		{"wrong query token", "/q/", "?api_key=wrong", nil, 401, unauthn, ""},
		{"wrong Basic password", "/ba/", "", []string{"Authorization", basicAuth(t, "ci", "wrong")}, 401, unauthn, ""},
		{"wrong Proxy-Authorization Bearer", "/b/", "", []string{"Proxy-Authorization", "Bearer wrong"}, 401, unauthn, ""},
		{"wrong Proxy-Authorization beside a right token in the route's place", "/b/", "",
			[]string{"Proxy-Authorization", "Bearer wrong", "Authorization", "Bearer " + ci}, 401, unauthn, ""},
		{"wrong Proxy-Authorization Basic", "/b/", "", []string{"Proxy-Authorization", basicAuth(t, "ci", "wrong")}, 401, unauthn, ""},
		{"Proxy-Authorization of another scheme", "/b/", "", []string{"Proxy-Authorization", "Digest username=ci"}, 401, unauthn, ""},
		{"Proxy-Authorization Basic without a password", "/b/", "", []string{"Proxy-Authorization", "Basic " + "Y2k="}, 401, unauthn, ""},
		{"Proxy-Authorization Basic that is not base64", "/b/", "", []string{"Proxy-Authorization", "Basic !!!"}, 401, unauthn, ""},
		{"no token on a restricted route", "/ci/", "", nil, 401, unauthn, ""},
		{"unlisted caller", "/ci/", "", []string{"Authorization", "Bearer " + app}, 403, notAllowed, "app"},
		{"unlisted caller by Proxy-Authorization", "/ci/", "", []string{"Proxy-Authorization", basicAuth(t, "batch", batch)}, 403, notAllowed, "batch"},
	}
	refusedBy := map[string]uint64{}
	refusedCount := map[string]int{}
	for _, c := range refusals {
		refusedCount[c.code]++
		if c.caller != "" {
			refusedBy[c.caller]++
		}
		t.Run(c.name, func(t *testing.T) {
			id := nextID()
			resp, body := p.get(t, c.path+id+c.query, append([]string{"X-Test-Id", id}, c.hdr...)...)
			wantRefusal(t, resp, body, c.status, c.code)
			if _, ok := up.byID(id); ok {
				t.Error("the refused request reached the upstream")
			}
		})
	}

	t.Run("admin API", func(t *testing.T) {
		got := callersOf(t, p)
		for _, name := range []string{"ci", "app", "batch"} {
			c, ok := got[name]
			if !ok {
				t.Errorf("/v1/callers has no %s: %v", name, got)
				continue
			}
			if c.Kind != "token" {
				t.Errorf("%s: kind %q, want token", name, c.Kind)
			}
			if d := c.Requests - baseline[name].Requests; d != requests[name] {
				t.Errorf("%s: requests rose by %d, want %d", name, d, requests[name])
			}
			if d := c.Refused - baseline[name].Refused; d != refusedBy[name] {
				t.Errorf("%s: refused rose by %d, want %d", name, d, refusedBy[name])
			}
			if c.LastSeen.Before(start.Add(-time.Second)) || c.LastSeen.After(time.Now().Add(time.Second)) {
				t.Errorf("%s: last_seen %v, want within this test", name, c.LastSeen)
			}
		}
		if len(got) != 3 {
			t.Errorf("/v1/callers lists %d callers, want 3", len(got))
		}
		for name, source := range map[string]string{"caller:ci": "file", "caller:app": "env", "caller:batch": "env"} {
			c := credentialOf(t, p, name)
			if c.Source != source || c.Version < 1 || c.Fingerprint == "" || c.State != "fresh" {
				t.Errorf("/v1/credentials %s: %+v, want source %s, a version, a fingerprint, fresh", name, c, source)
			}
		}
		for _, path := range []string{"/v1/callers", "/v1/credentials", "/metrics", "/readyz", "/"} {
			_, body := p.admin(t, http.MethodGet, path, "")
			wantNoValue(t, "GET "+path, string(body), tokens...)
		}
	})

	t.Run("refusals counted", func(t *testing.T) {
		m := scrape(t, p)
		for _, reason := range refusalReasons {
			if got := refusedTotal(t, m, reason) - refusedTotal(t, baseMetrics, reason); int(got) != refusedCount[reason] {
				t.Errorf("sidekey_callers_refused_total{reason=%q} rose by %v, want %d", reason, got, refusedCount[reason])
			}
		}
	})

	t.Run("status command", func(t *testing.T) {
		want := callersOf(t, p)
		r := runSidekey(t, nil, "status", "--admin", p.AdminURL)
		if r.code != 0 {
			t.Fatalf("sidekey status exited %d: %s", r.code, maskSecrets(r.stderr))
		}
		wantNoValue(t, "sidekey status", r.stdout, tokens...)
		creds, callers, ok := strings.Cut(strings.TrimSpace(r.stdout), "\n\n")
		if !ok {
			t.Fatalf("no caller table after the credentials:\n%s", maskSecrets(r.stdout))
		}
		if _, rows := statusRows(t, creds); rows["up"] == nil {
			t.Errorf("the credential table has no row for up:\n%s", creds)
		}
		header, rows := statusRows(t, callers)
		if wantHeader := []string{"CALLER", "KIND", "REQUESTS", "REFUSED", "LAST", "SEEN"}; !slices.Equal(header, wantHeader) {
			t.Errorf("caller table header %q, want %q", header, wantHeader)
		}
		for name, c := range want {
			row := rows[name]
			if len(row) < 5 {
				t.Errorf("no row for %s in:\n%s", name, callers)
				continue
			}
			if row[1] != c.Kind || row[2] != strconv.FormatUint(c.Requests, 10) || row[3] != strconv.FormatUint(c.Refused, 10) {
				t.Errorf("row %q, want kind %s, %d requests, %d refused", row, c.Kind, c.Requests, c.Refused)
			}
			if !strings.HasSuffix(strings.Join(row[4:], " "), "ago") {
				t.Errorf("row %q: last seen is not a time ago", row)
			}
		}
		if len(rows) != len(want) {
			t.Errorf("the caller table has %d rows, want %d:\n%s", len(rows), len(want), callers)
		}
	})

	t.Run("no token in the logs", func(t *testing.T) {
		// After the exit every batched audit line has been written.
		p.Client.CloseIdleConnections()
		code, ok := p.terminate(20 * time.Second)
		p.asserted.Store(true)
		if !ok || code != 0 {
			t.Errorf("exit after SIGTERM: code %d, in time %v; want 0", code, ok)
		}
		wantNoValue(t, "the log (level debug)", strings.Join(p.Logs(), "\n"), tokens...)
	})
}

// TestCallerAnonymous: with allow_anonymous a request naming no caller is
// admitted to a route without callers, but not to one that lists callers;
// a wrong Proxy-Authorization is still refused.
func TestCallerAnonymous(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	ci, upTok := secretValue(t), secretValue(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), upTok)
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"allow_anonymous: true", "callers:", "  ci:", "    token: env:E2E_CALLER_CI"},
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{
			{name: "open", prefix: "/o/", upstream: up.URL, strip: true, inject: bearerTok},
			{name: "restricted", prefix: "/r/", upstream: up.URL, strip: true, inject: bearerTok, extra: []string{"callers: [ci]"}},
		}), withEnv("E2E_CALLER_CI="+ci))
	waitOKWith(t, p, "/r/ready", "Proxy-Authorization", "Bearer "+ci)
	cases := []struct {
		name, path string
		hdr        []string
		status     int
		caller     string
	}{
		{"anonymous on an open route", "/o/", nil, 200, ""},
		{"a caller on an open route", "/o/", []string{"Proxy-Authorization", "Bearer " + ci}, 200, "ci"},
		{"anonymous on a restricted route", "/r/", nil, 401, ""},
		{"a caller on a restricted route", "/r/", []string{"Authorization", "Bearer " + ci}, 200, "ci"},
		{"wrong Proxy-Authorization on an open route", "/o/", []string{"Proxy-Authorization", "Bearer wrong"}, 401, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := nextID()
			resp, body := p.get(t, c.path+id, append([]string{"X-Test-Id", id}, c.hdr...)...)
			seen, reached := up.byID(id)
			if c.status != http.StatusOK {
				wantRefusal(t, resp, body, c.status, "caller_unauthenticated")
				if reached {
					t.Error("the refused request reached the upstream")
				}
				return
			}
			if resp.StatusCode != http.StatusOK || !reached {
				t.Fatalf("status %d (reached the upstream: %v), want 200; body %q", resp.StatusCode, reached, maskSecrets(string(body)))
			}
			if got := seen.Header.Get("Authorization"); got != "Bearer "+upTok {
				t.Errorf("the upstream's Authorization is not the route's credential")
			}
			if leaks := leakedInto(seen, ci); len(leaks) > 0 {
				t.Errorf("the caller token reached the upstream in: %s", strings.Join(leaks, ", "))
			}
			if got, _ := auditLineFor(t, p, id)["caller"].(string); got != c.caller {
				t.Errorf("audit line caller %q, want %q", got, c.caller)
			}
		})
	}
}

// TestCallerReload: SIGHUP applies changed callers at once: a caller
// added is accepted, one removed is refused and its token no longer held,
// a route's new callers list is enforced, and the use counted for a
// caller that stays survives the reload.
func TestCallerReload(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	ci, app := secretValue(t), secretValue(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))
	up := newUpstream(t, nil)
	cfg := func(callers []string, routeExtra ...string) string {
		return configYAML(append([]string{"callers:"}, callers...),
			[]string{fileCred("tok", filepath.Join(dir, "tok"))},
			[]route{{name: "r", prefix: "/r/", upstream: up.URL, strip: true, inject: bearerTok, extra: routeExtra}})
	}
	ciCaller := []string{"  ci:", "    token: env:E2E_CALLER_CI"}
	appCaller := []string{"  app:", "    token: env:E2E_CALLER_APP"}
	p := startSidekey(t, cfg(ciCaller), withEnv("E2E_CALLER_CI="+ci, "E2E_CALLER_APP="+app))
	waitOKWith(t, p, "/r/ready", "Authorization", "Bearer "+ci)
	status := func(tok string) int {
		t.Helper()
		id := nextID()
		resp, body := p.get(t, "/r/"+id, "X-Test-Id", id, "Authorization", "Bearer "+tok)
		if _, reached := up.byID(id); reached != (resp.StatusCode == http.StatusOK) {
			t.Errorf("status %d but reached the upstream: %v; body %q", resp.StatusCode, reached, maskSecrets(string(body)))
		}
		return resp.StatusCode
	}
	if got := status(app); got != http.StatusUnauthorized {
		t.Errorf("a token of no caller got %d, want 401", got)
	}
	ciBefore := callersOf(t, p)["ci"]

	if applied, lines := reloadWith(t, p, cfg(append(ciCaller, appCaller...), "callers: [app]")); !applied {
		t.Fatalf("the reload was refused: %v", lines)
	}
	eventually(t, 10*time.Second, "the added caller is accepted", func() error {
		if got := status(app); got != http.StatusOK {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
	if got := status(ci); got != http.StatusForbidden {
		t.Errorf("a caller the route no longer lists got %d, want 403", got)
	}
	callers := callersOf(t, p)
	if c := callers["ci"]; c.Requests != ciBefore.Requests || c.Refused != ciBefore.Refused+1 {
		t.Errorf("ci after the reload: %+v, want the %d requests counted before and one refusal more", c, ciBefore.Requests)
	}
	if _, ok := callers["app"]; !ok {
		t.Errorf("/v1/callers has no app after the reload: %v", callers)
	}

	if applied, lines := reloadWith(t, p, cfg(appCaller)); !applied {
		t.Fatalf("the second reload was refused: %v", lines)
	}
	if got := status(ci); got != http.StatusUnauthorized {
		t.Errorf("a removed caller got %d, want 401", got)
	}
	if got := status(app); got != http.StatusOK {
		t.Errorf("the remaining caller got %d, want 200", got)
	}
	if _, ok := callersOf(t, p)["ci"]; ok {
		t.Error("/v1/callers still lists the removed caller")
	}
	code, body := p.admin(t, http.MethodGet, "/v1/credentials", "")
	if code != http.StatusOK || strings.Contains(string(body), `"caller:ci"`) {
		t.Errorf("/v1/credentials (%d) still holds the removed caller's token: %s", code, maskSecrets(string(body)))
	}
}

// TestCallerTokenFileRotation: a caller token file replaced by rename is
// accepted in its new value within 100 ms, and the old value is refused
// from then on. A rotation during which the test process itself could not
// run for 50 ms is not measured (the lag is then the machine's); at least
// three must be.
func TestCallerTokenFileRotation(t *testing.T) {
	t.Parallel()
	const (
		maxLag   = 100 * time.Millisecond
		stall    = 50 * time.Millisecond
		measured = 3
		attempts = 10
	)
	dir := dataDir(t)
	tokPath := filepath.Join(dir, "ci-token")
	cur := secretValue(t)
	writeSecretFile(t, tokPath, cur)
	upTok := secretValue(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), upTok)
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"callers:", "  ci:", "    token: " + quote("file:"+tokPath)},
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "b", prefix: "/b/", upstream: up.URL, strip: true, inject: bearerTok}}))
	waitOKWith(t, p, "/b/ready", "Authorization", "Bearer "+cur)
	status := func(tok string) int {
		resp, body := p.get(t, "/b/rot", "Authorization", "Bearer "+tok)
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 200 or 401: %q", resp.StatusCode, maskSecrets(string(body)))
		}
		return resp.StatusCode
	}
	startVersion := credentialOf(t, p, "caller:ci").Version

	var lags []time.Duration
	for i := 0; i < attempts && len(lags) < measured; i++ {
		next := secretValue(t)
		writeSecretFile(t, tokPath, next)
		renamed := time.Now()
		last, stalled := renamed, false
		for {
			code := status(next)
			now := time.Now()
			stalled = stalled || now.Sub(last) >= stall
			last = now
			if code == http.StatusOK {
				break
			}
			if now.Sub(renamed) > 10*time.Second {
				t.Fatalf("rotation %d: the new caller token is still refused 10 s after the rename", i)
			}
			time.Sleep(2 * time.Millisecond) // polling
		}
		lag := last.Sub(renamed)
		if stalled {
			t.Logf("rotation %d: accepted after %v, not measured: the test process stalled for %v or more", i, lag, stall)
		} else {
			lags = append(lags, lag)
			if lag > maxLag {
				t.Errorf("rotation %d: the new caller token was accepted %v after the rename, want within %v", i, lag, maxLag)
			}
		}
		if code := status(cur); code != http.StatusUnauthorized {
			t.Errorf("rotation %d: the old caller token got %d after the new one was accepted, want 401", i, code)
		}
		if code := status(next); code != http.StatusOK {
			t.Errorf("rotation %d: the new caller token got %d on a second request, want 200", i, code)
		}
		cur = next
	}
	if len(lags) < measured {
		t.Errorf("only %d of %d rotations could be measured (the machine kept stalling the test)", len(lags), attempts)
	}
	t.Logf("rename-to-accepted lags: %v", lags)
	if v := credentialOf(t, p, "caller:ci").Version; v <= startVersion {
		t.Errorf("caller:ci version %d after the rotations, want more than %d", v, startVersion)
	}
	for _, r := range up.requests() {
		if leaks := leakedInto(r, cur); len(leaks) > 0 {
			t.Errorf("a caller token reached the upstream in %s", strings.Join(leaks, ", "))
		}
	}
}

// TestCallerSpans: a proxied request's server span names its caller
// (sidekey.caller), and no caller token is in any span or anything else
// exported over OTLP.
func TestCallerSpans(t *testing.T) {
	t.Parallel()
	recv := newOTLPReceiver(t)
	dir := dataDir(t)
	ci := secretValue(t)
	ciBasic := strings.TrimPrefix(basicAuth(t, "ci", ci), "Basic ")
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"telemetry:", "  otlp_endpoint: " + quote(recv.Addr), "  service_name: sidekey-e2e",
			"callers:", "  ci:", "    token: env:E2E_CALLER_CI"},
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "t", prefix: "/t/", upstream: up.URL, strip: true, inject: bearerTok}}),
		withEnv("E2E_CALLER_CI="+ci, "OTEL_BSP_SCHEDULE_DELAY=100"))
	waitOKWith(t, p, "/t/ready", "Authorization", "Bearer "+ci)

	var traces []string
	for _, hdr := range [][]string{
		{"Authorization", "Bearer " + ci},
		{"Proxy-Authorization", "Basic " + ciBasic},
	} {
		id := nextID()
		resp, body := p.get(t, "/t/"+id, append([]string{"X-Test-Id", id}, hdr...)...)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, maskSecrets(string(body)))
		}
		seen, ok := up.byID(id)
		if !ok {
			t.Fatal("the upstream did not get the request")
		}
		traceID, _, err := traceparent(seen.Header.Get("Traceparent"))
		if err != nil {
			t.Fatal(err)
		}
		traces = append(traces, traceID)
	}
	resp, _ := p.get(t, "/t/refused", "Authorization", "Bearer wrong")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong token got %d, want 401", resp.StatusCode)
	}

	for _, traceID := range traces {
		eventually(t, 10*time.Second, "the server span of trace "+traceID, func() error {
			for _, s := range recv.spans() {
				if hex.EncodeToString(s.GetTraceId()) != traceID || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
					continue
				}
				if got, ok := attrValue(s.GetAttributes(), "sidekey.caller"); !ok || got != "ci" {
					return fmt.Errorf("server span attribute sidekey.caller = %q (present %v), want ci", got, ok)
				}
				return nil
			}
			return errors.New("no server span yet")
		})
	}

	p.Client.CloseIdleConnections()
	code, ok := p.terminate(20 * time.Second)
	p.asserted.Store(true)
	if !ok || code != 0 {
		t.Errorf("sidekey exit after SIGTERM: code %d, in time %v; want 0", code, ok)
	}
	for _, s := range recv.spans() {
		for _, kv := range s.GetAttributes() {
			v, _ := attrValue([]*commonpb.KeyValue{kv}, kv.GetKey())
			wantNoValue(t, "span "+s.GetName()+" attribute "+kv.GetKey(), v, ci, ciBasic)
		}
	}
	for i, data := range recv.serialized(t) {
		recordCapture(fmt.Sprintf("OTLP export #%d in %s", i/2, t.Name()), data)
		if bytes.Contains(data, []byte(ci)) || bytes.Contains(data, []byte(ciBasic)) {
			t.Errorf("the caller token is in OTLP export #%d", i/2)
		}
	}
}

// TestValidateCallers: validate (and run) refuse a listener reachable from
// the network while no caller is defined and anonymous use is not allowed,
// and every badly written caller, each at its line; they accept the same
// listener with callers or allow_anonymous, and warn about callers no
// listener can identify.
func TestValidateCallers(t *testing.T) {
	t.Parallel()
	literal := "hunter2-" + secretValue(t)
	rememberSecret(t, literal)
	reachable := edit(t, validBase, "listen: 127.0.0.1:0\nshutdown", "listen: 0.0.0.0:8080\nshutdown")
	withCallers := func(text string, lines ...string) string {
		return text + "callers:\n" + strings.Join(lines, "\n") + "\n"
	}
	ciCaller := []string{"  ci:", "    token: env:E2E_CI"}
	routeExtra := func(text string, lines ...string) string {
		return edit(t, text, "    timeout: 5s\n", "    timeout: 5s\n    "+strings.Join(lines, "\n    ")+"\n")
	}
	cases := []struct {
		name, text string
		marker     string // the line the problem is reported at
		msg        string // part of the message
	}{
		{"reachable listener", reachable, "listen: 0.0.0.0:8080", `listen: "0.0.0.0:8080" is reachable from the network`},
		{"reachable listener on every interface", edit(t, validBase, "listen: 127.0.0.1:0\nshutdown", "listen: \":8080\"\nshutdown"),
			`listen: ":8080"`, `is reachable from the network`},
		{"a caller with two kinds", withCallers(validBase, "  ci:", "    token: env:E2E_CI", "    uid: 1000"), "  ci:", "needs exactly one of token, cert and uid"},
		{"a caller with none", withCallers(validBase, "  ci: {}"), "  ci:", "needs exactly one of token, cert and uid"},
		{"a literal caller token", withCallers(validBase, "  ci:", "    token: "+literal), "token: hunter2", "callers.ci.token: a literal secret is not allowed"},
		{"a certificate with two names", withCallers(validBase, "  app:", `    cert: {uri: "spiffe://c/ns/a/sa/b", cn: app}`), "cert:", "needs exactly one of uri, dns and cn"},
		{"a certificate URI that is none", withCallers(validBase, "  app:", `    cert: {uri: "not a uri"}`), "cert:", "is not a URI"},
		{"a negative uid", withCallers(validBase, "  me:", "    uid: -1"), "uid: -1", "is not a user ID"},
		{"two callers with the same uid", withCallers(validBase, "  a:", "    uid: 1000", "  b:", "    uid: 1000"), "  b:", "the same uid as caller a"},
		{"a route naming an unknown caller", withCallers(routeExtra(validBase, "callers: [nobody]"), ciCaller...), "callers: [nobody]", `no caller is named "nobody"`},
		{"a route with an empty caller list", withCallers(routeExtra(validBase, "callers: []"), ciCaller...), "callers: []", "must not be empty"},
		{"by_caller naming an unknown caller", withCallers(edit(t, validBase, "inject: { credential: tok, as: bearer }",
			"inject: { credential: tok, as: bearer, by_caller: {ghost: tok} }"), ciCaller...), "by_caller", `no caller is named "ghost"`},
		{"by_caller naming an unknown credential", withCallers(edit(t, validBase, "inject: { credential: tok, as: bearer }",
			"inject: { credential: tok, as: bearer, by_caller: {ci: nope} }"), ciCaller...), "by_caller", `no credential is named "nope"`},
		{"by_caller naming a caller the route does not admit", withCallers(routeExtra(edit(t, validBase, "inject: { credential: tok, as: bearer }",
			"inject: { credential: tok, as: bearer, by_caller: {ops: tok} }"), "callers: [ci]"), append(ciCaller, "  ops:", "    token: env:E2E_OPS")...),
			"by_caller", "not among the route's callers"},
		{"an allowed host that is none", edit(t, validBase, "log:", "allowed_hosts: [\"bad host\"]\nlog:"), "allowed_hosts", "is not a host name"},
		{"an allowed origin that is none", edit(t, validBase, "log:", "allowed_origins: [\"ftp://x.example\"]\nlog:"), "allowed_origins", "is not an origin"},
		{"a unix listener without a path", edit(t, validBase, "listen: 127.0.0.1:0\nshutdown", "listen: \"unix:\"\nshutdown"), `listen: "unix:"`, "needs the path"},
	}
	gateway := validBase + `tls:
  listen: ":8443"
  acme:
    domains: [gw.example.com]
    email: ops@example.com
    directory: https://acme.example/directory
    challenge: tls-alpn-01
    storage: memory
forward_proxy:
  listen: 0.0.0.0:3128
`
	cases = append(cases,
		struct{ name, text, marker, msg string }{"reachable TLS listener", gateway, `listen: ":8443"`,
			`tls.listen: ":8443" is reachable from the network`},
		struct{ name, text, marker, msg string }{"reachable forward proxy", gateway, "listen: 0.0.0.0:3128",
			`forward_proxy.listen: "0.0.0.0:3128" is reachable from the network`})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dataDir(t), "bad.yaml")
			writeTestFile(t, path, tc.text)
			res := runSidekey(t, nil, "validate", "-c", path)
			if res.code != 1 {
				t.Errorf("validate exited %d, want 1", res.code)
			}
			prefix := fmt.Sprintf("%s:%d: ", path, lineOf(t, tc.text, tc.marker))
			found := false
			for _, l := range strings.Split(res.stderr, "\n") {
				found = found || strings.HasPrefix(l, prefix) && strings.Contains(l, tc.msg)
			}
			if !found {
				t.Errorf("stderr has no line %q...%q", prefix, tc.msg)
			}
			wantNoValue(t, "validate's output", res.stdout+res.stderr, literal)
			if t.Failed() {
				t.Logf("config:\n%s\nstderr:\n%s", maskSecrets(numbered(tc.text)), maskSecrets(res.stderr))
			}
		})
	}

	t.Run("run refuses a reachable listener", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(dataDir(t), "reachable.yaml")
		writeTestFile(t, path, reachable)
		res := runSidekey(t, []procOption{withEnv("E2E_TOKEN=x")}, "run", "-c", path)
		if res.code != 1 {
			t.Errorf("run exited %d, want 1", res.code)
		}
		want := fmt.Sprintf(`%s:%d: listen: "0.0.0.0:8080" is reachable from the network`, path, lineOf(t, reachable, "listen: 0.0.0.0"))
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr %q, want %q", res.stderr, want)
		}
	})

	accepted := []struct {
		name, text string
		marker     string // the line of the warning validate prints, if any
		warning    string
	}{
		{"reachable listener with callers", withCallers(reachable, ciCaller...), "", ""},
		{"reachable listener with allow_anonymous", edit(t, reachable, "log:", "allow_anonymous: true\nlog:"), "", ""},
		{"a uid caller without a unix listener", withCallers(validBase, "  me:", "    uid: 1000"),
			"  me:", "callers.me: a uid caller is never identified without a unix-socket listen"},
		{"a cert caller without tls.client_ca", withCallers(validBase, "  app:", `    cert: {uri: "spiffe://c/ns/a/sa/b"}`),
			"  app:", "callers.app: a cert caller is never identified without tls.client_ca"},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dataDir(t), "good.yaml")
			writeTestFile(t, path, tc.text)
			res := runSidekey(t, nil, "validate", "-c", path)
			if res.code != 0 {
				t.Errorf("validate exited %d, want 0; stderr:\n%s", res.code, res.stderr)
			}
			if tc.warning == "" {
				if strings.TrimSpace(res.stderr) != "" {
					t.Errorf("validate printed %q, want nothing on stderr", res.stderr)
				}
				return
			}
			want := fmt.Sprintf("%s:%d: %s", path, lineOf(t, tc.text, tc.marker), tc.warning)
			if !strings.Contains(res.stderr, want) {
				t.Errorf("stderr %q, want the warning %q", res.stderr, want)
			}
		})
	}
}

// TestUnixSocketCallers: listen: unix:PATH replaces a stale socket at
// start, creates the socket 0600 even under umask 0, admits a uid caller
// (root, the test's own user) and injects for it; another user cannot
// even connect, and once the socket is opened up for it, its uid is
// refused (401). A reload moves the socket to another path (0600 again,
// the old file gone), and SIGTERM removes it. A live socket or another
// file at the path is a start-up failure.
//
// The test is not parallel: it runs sidekey under umask 0, which is the
// test process's own while the process starts.
func TestUnixSocketCallers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a uid 0 caller and runuser")
	}
	for _, tool := range []string{"runuser", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skipf("needs the user nobody: %v", err)
	}
	dir := dataDir(t)
	sockDir := socketDir(t)
	sock, sock2 := filepath.Join(sockDir, "a.sock"), filepath.Join(sockDir, "b.sock")
	upTok := secretValue(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), upTok)
	up := newUpstream(t, nil)
	cfg := func(path string) string {
		return edit(t, configYAML(
			[]string{"callers:", "  operator:", "    uid: 0"},
			[]string{fileCred("tok", filepath.Join(dir, "tok"))},
			[]route{{name: "r", prefix: "/r/", upstream: up.URL, strip: true, inject: bearerTok}}),
			"listen: 127.0.0.1:0\n", "listen: "+quote("unix:"+path)+"\n")
	}
	staleSocket(t, sock)

	old := syscall.Umask(0)
	p := startSidekey(t, cfg(sock))
	syscall.Umask(old)
	if p.ProxyAddr != sock {
		t.Fatalf("the proxy listens on %q, want %q", p.ProxyAddr, sock)
	}
	if m := socketMode(t, sock); m != 0o600 {
		t.Errorf("socket mode %v under umask 0, want 0600", m)
	}
	useUnix(p, sock)
	waitOK(t, p, "/r/ready")

	// through sends a request as root and checks it was admitted as the
	// uid caller with the route's credential.
	through := func(t *testing.T) {
		t.Helper()
		id := nextID()
		resp, body := p.get(t, "/r/"+id, "X-Test-Id", id)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200; body %q", resp.StatusCode, maskSecrets(string(body)))
		}
		seen, ok := up.byID(id)
		if !ok {
			t.Fatal("the upstream did not get the request")
		}
		if seen.Header.Get("Authorization") != "Bearer "+upTok {
			t.Error("the upstream's Authorization is not the route's credential")
		}
		if got := auditLineFor(t, p, id)["caller"]; got != "operator" {
			t.Errorf("audit line caller %v, want operator", got)
		}
	}
	t.Run("uid caller admitted", through)

	t.Run("another user cannot connect", func(t *testing.T) {
		if fi, err := os.Stat(sockDir); err != nil || fi.Mode().Perm()&0o005 != 0o005 {
			t.Fatalf("the socket's directory is not open to others (%v, %v): the test would prove nothing", fi.Mode(), err)
		}
		id := nextID()
		r := curlAs(t, "nobody", sock, "http://localhost/r/"+id, "X-Test-Id: "+id)
		if r.exit != 7 || r.status != 0 {
			t.Errorf("curl as nobody: exit %d, status %d (%q), want exit 7 (could not connect)", r.exit, r.status, r.stderr)
		}
		if _, ok := up.byID(id); ok {
			t.Error("nobody's request reached the upstream")
		}
	})

	t.Run("another user's uid refused", func(t *testing.T) {
		before := callersOf(t, p)["operator"]
		if err := os.Chmod(sockDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(sock, 0o666); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(sock, 0o600)
		id := nextID()
		r := curlAs(t, "nobody", sock, "http://localhost/r/"+id, "X-Test-Id: "+id)
		if r.exit != 0 || r.status != http.StatusUnauthorized {
			t.Errorf("curl as nobody: exit %d, status %d (%q), want 401", r.exit, r.status, r.stderr)
		} else if m, err := jsonError([]byte(r.body)); err != nil || m["error"] != "caller_unauthenticated" {
			t.Errorf("body %q, want caller_unauthenticated", r.body)
		}
		if _, ok := up.byID(id); ok {
			t.Error("nobody's request reached the upstream")
		}
		if got := callersOf(t, p)["operator"]; got.Requests != before.Requests {
			t.Errorf("nobody's request counted for operator: %d -> %d", before.Requests, got.Requests)
		}
	})

	t.Run("admin API", func(t *testing.T) {
		c, ok := callersOf(t, p)["operator"]
		if !ok || c.Kind != "uid" || c.Requests < 2 || c.LastSeen.IsZero() {
			t.Errorf("/v1/callers operator: %+v (present %v), want kind uid with requests", c, ok)
		}
	})

	t.Run("reload to another path", func(t *testing.T) {
		applied, lines := reloadWith(t, p, cfg(sock2))
		if !applied {
			t.Fatalf("the reload was refused: %v", lines)
		}
		if m := socketMode(t, sock2); m != 0o600 {
			t.Errorf("the new socket's mode %v, want 0600", m)
		}
		useUnix(p, sock2)
		through(t)
		eventually(t, 5*time.Second, "the old socket file is removed", func() error {
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("stat %s: %v", sock, err)
			}
			return nil
		})
	})

	t.Run("SIGTERM removes the socket", func(t *testing.T) {
		p.Client.CloseIdleConnections()
		code, ok := p.terminate(20 * time.Second)
		p.asserted.Store(true)
		if !ok || code != 0 {
			t.Errorf("exit after SIGTERM: code %d, in time %v; want 0", code, ok)
		}
		if _, err := os.Lstat(sock2); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the socket is still there after the exit: %v", err)
		}
	})

	t.Run("a live socket or another file is a start-up failure", func(t *testing.T) {
		live := filepath.Join(sockDir, "live.sock")
		ln, err := net.Listen("unix", live)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		plain := filepath.Join(sockDir, "plain")
		if err := os.WriteFile(plain, []byte("not a socket"), 0o600); err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]string{live: "another server is listening", plain: "is not a socket"} {
			cfgPath := filepath.Join(dir, filepath.Base(path)+".yaml")
			writeTestFile(t, cfgPath, cfg(path))
			res := runSidekey(t, nil, "run", "-c", cfgPath)
			if res.code != 1 || !strings.Contains(res.stderr, want) {
				t.Errorf("run on %s exited %d with %q, want 1 and %q", filepath.Base(path), res.code, res.stderr, want)
			}
		}
		if fi, err := os.Lstat(plain); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("the file at the path was touched: %v %v", fi, err)
		}
		if c, err := net.Dial("unix", live); err != nil {
			t.Errorf("the live socket no longer accepts connections: %v", err)
		} else {
			c.Close()
		}
	})
}
