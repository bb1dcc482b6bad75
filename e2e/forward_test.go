package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mccutchen/go-httpbin/v2/httpbin"
)

// The forward proxy end to end (SPEC forward_proxy): real clients (curl,
// Python's urllib and requests, Go, Node with undici, git) configured by
// nothing but the environment sidekey env prints, against TLS upstreams
// for route hosts that no client ever resolves: with a proxy, a client
// hands the name to the proxy. The upstreams' certificates come from a CA
// of the test's own, pinned by each route's upstream_tls.ca.

const (
	apiHost = "api.test.example"
	gitHost = "git.test.example"
	binHost = "bin.test.example"
)

// tokenUpstream answers "hello from HOST: PATH" to a request that carries
// want as its Authorization, and 401 to any other; it counts both.
func tokenUpstream(t testing.TB, k *testPKI, host, want string) (*atomic.Int64, string) {
	t.Helper()
	var served atomic.Int64
	srv := k.server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want || r.Header.Get("Proxy-Authorization") != "" {
			http.Error(w, "not the injected credential", http.StatusUnauthorized)
			return
		}
		served.Add(1)
		fmt.Fprintf(w, "hello from %s: %s\n", host, r.URL.Path)
	}), host)
	return &served, srv.URL
}

// gitUpstream is git's smart HTTP server (git http-backend, as CGI) over
// TLS for a bare repository with one commit on main; it wants want as the
// Authorization of every request. It returns the URL and the commit.
func gitUpstream(t testing.TB, k *testPKI, want string) (string, string) {
	t.Helper()
	need(t, "git")
	root := t.TempDir()
	gitEnv := []string{"HOME=" + root, "GIT_CONFIG_NOSYSTEM=1", "PATH=" + os.Getenv("PATH")}
	run := func(dir string, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = dir, gitEnv
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	src := filepath.Join(root, "src")
	run(root, "init", "-q", "-b", "main", src)
	run(src, "-c", "user.email=e2e@test.example", "-c", "user.name=e2e", "commit", "-q", "--allow-empty", "-m", "first")
	commit := run(src, "rev-parse", "HEAD")
	run(root, "clone", "-q", "--bare", src, filepath.Join(root, "repo.git"))
	backend := filepath.Join(run(root, "--exec-path"), "git-http-backend")
	cgiHandler := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := k.server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "not the injected credential", http.StatusUnauthorized)
			return
		}
		r.Header.Del("Authorization") // not for the CGI's environment
		cgiHandler.ServeHTTP(w, r)
	}), gitHost)
	return srv.URL, commit
}

func waitReady(t testing.TB, p *proc) {
	t.Helper()
	eventually(t, 15*time.Second, "/readyz answers 200", func() error {
		if code, r := readyz(t, p); code != http.StatusOK {
			return fmt.Errorf("%d %+v", code, r)
		}
		return nil
	})
}

// TestForwardClients: each client, pointed at the forward proxy by its
// environment alone, reaches a route host through an intercepted
// connection and gets the upstream's answer made with the injected
// credential, which it never sees. The leaf it was served verifies with
// OpenSSL against cert_out, names the host and has an AKI.
func TestForwardClients(t *testing.T) {
	k := newTestPKI(t)
	token := secretValue(t)
	served, apiURL := tokenUpstream(t, k, apiHost, "Bearer "+token)
	gitURL, commit := gitUpstream(t, k, "Basic "+base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token)))
	caDir := caDirFor(t)
	cfg := configYAML(forwardTop(caDir), []string{envCred("tok", "UP_TOKEN")}, []route{
		hostRoute("api", apiHost, apiURL, "{credential: tok, as: bearer}", k),
		hostRoute("git", gitHost, gitURL, "{credential: tok, as: basic, username: x-access-token}", k),
	})
	fp := startForward(t, cfg, caDir, withEnv("UP_TOKEN="+token))
	waitReady(t, fp.proc)
	env := fp.clientEnv(t, nil)
	work := t.TempDir()

	clients := []struct {
		name string
		need []string
		argv func(u string) []string
	}{
		{"curl", []string{"curl"}, func(u string) []string { return []string{"curl", "-sS", "--fail-with-body", u} }},
		{"python urllib", []string{"python3"}, func(u string) []string {
			return []string{"python3", "-c", "import sys, urllib.request\nsys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())", u}
		}},
		{"python requests", []string{"python3"}, func(u string) []string {
			return []string{"python3", "-c", "import sys, requests\nr = requests.get(sys.argv[1])\nr.raise_for_status()\nsys.stdout.write(r.text)", u}
		}},
		{"go net/http", nil, func(u string) []string { return []string{fwdClientBin(t), u} }},
		{"node undici", []string{"node", "npm"}, func(u string) []string {
			return []string{"node", "-e", `const { EnvHttpProxyAgent, setGlobalDispatcher, fetch } = require(process.argv[1] + "/node_modules/undici");
setGlobalDispatcher(new EnvHttpProxyAgent());
fetch(process.argv[2]).then(async (r) => { process.stdout.write(await r.text()); if (r.status !== 200) process.exit(1); })
  .catch((e) => { console.error(e); process.exit(1); });`, undiciDir(t), u}
		}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			need(t, c.need...)
			if c.name == "python requests" {
				if err := exec.Command("python3", "-c", "import requests").Run(); err != nil {
					t.Skip("needs the requests module (Debian: python3-requests)")
				}
			}
			path := "/" + strings.ReplaceAll(c.name, " ", "-")
			before := served.Load()
			res := runClient(t, env, work, c.argv("https://"+apiHost+path)...)
			if res.err != nil || res.stdout != "hello from "+apiHost+": "+path+"\n" {
				t.Fatalf("%v: stdout %q, stderr %q", res.err, maskSecrets(res.stdout), maskSecrets(res.stderr))
			}
			if served.Load() != before+1 {
				t.Error("the upstream did not serve the request")
			}
			line := auditLineFor(t, fp.proc, path)
			if line["route"] != "api" || line["credential"] != "tok" || line["status"] != float64(200) {
				t.Errorf("audit line %v", line)
			}
		})
	}

	t.Run("git ls-remote", func(t *testing.T) {
		gitEnv := append(env, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
		res := runClient(t, gitEnv, work, "git", "ls-remote", "https://"+gitHost+"/repo.git")
		if res.err != nil || !strings.Contains(res.stdout, commit+"\trefs/heads/main") {
			t.Fatalf("%v: stdout %q, stderr %q", res.err, maskSecrets(res.stdout), maskSecrets(res.stderr))
		}
	})

	t.Run("the leaf", func(t *testing.T) {
		need(t, "openssl")
		res := runClient(t, env, work, "openssl", "s_client", "-proxy", fp.FwdAddr, "-connect", apiHost+":443",
			"-servername", apiHost, "-showcerts")
		blk, _ := pem.Decode([]byte(res.stdout))
		if blk == nil {
			t.Fatalf("no certificate from s_client: %v %q", res.err, res.stderr)
		}
		leaf, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != apiHost || len(leaf.AuthorityKeyId) == 0 || leaf.IsCA {
			t.Errorf("leaf SANs %q, AKI %x, CA %v", leaf.DNSNames, leaf.AuthorityKeyId, leaf.IsCA)
		}
		leafFile := filepath.Join(t.TempDir(), "leaf.pem")
		if err := os.WriteFile(leafFile, pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
		v := runClient(t, env, work, "openssl", "verify", "-x509_strict", "-CAfile", fp.CertOut, leafFile)
		if v.err != nil || !strings.Contains(v.stdout, ": OK") {
			t.Errorf("openssl verify -x509_strict: %v %q %q", v.err, v.stdout, v.stderr)
		}
		if v := runClient(t, env, work, "openssl", "verify", "-x509_strict", "-CAfile", k.pemPath, leafFile); v.err == nil {
			t.Error("the leaf verifies against another CA")
		}
	})

	// The CA is listed and counted; the requests went through CONNECTs.
	code, body := fp.admin(t, http.MethodGet, "/v1/certificates", "")
	if code != 200 || !strings.Contains(string(body), `"kind": "forward-ca"`) && !strings.Contains(string(body), `"kind":"forward-ca"`) {
		t.Errorf("/v1/certificates = %d %s", code, body)
	}
	m := scrape(t, fp.proc)
	if n := m.must(t, "sidekey_forward_connects_total", "result", "intercepted"); n < float64(len(clients)+1) {
		t.Errorf("intercepted = %v", n)
	}
	if n := m.must(t, "sidekey_forward_connects_total", "result", "refused"); n != 0 {
		t.Errorf("refused = %v", n)
	}
}

// TestForwardRefusals: an unrouted host, an IP literal, a route host on
// another port and an allow_tunnel name that resolves to loopback (with no
// allow_addresses) are each refused with 403 destination_not_allowed and
// counted; with allow_addresses, the same tunnel passes, untouched.
func TestForwardRefusals(t *testing.T) {
	k := newTestPKI(t)
	token := secretValue(t)
	var sawAuth atomic.Value
	tunnelTarget := k.server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth.Store(r.Header.Get("Authorization"))
		io.WriteString(w, "tunnel target\n")
	}), "localhost")
	tport := tunnelTarget.Listener.Addr().(*net.TCPAddr).Port
	_, apiURL := tokenUpstream(t, k, apiHost, "Bearer "+token)
	routes := []route{hostRoute("api", apiHost, apiURL, "{credential: tok, as: bearer}", k)}
	tunnel := fmt.Sprintf("allow_tunnel: [localhost, \"localhost:%d\"]", tport)

	caDir := caDirFor(t)
	fp := startForward(t, configYAML(forwardTop(caDir, tunnel), []string{envCred("tok", "UP_TOKEN")}, routes), caDir, withEnv("UP_TOKEN="+token))
	refusals := []string{"unrouted.test.example:443", "127.0.0.1:443", "203.0.113.7:443", "[::1]:443", apiHost + ":8443",
		"localhost:443", fmt.Sprintf("localhost:%d", tport), fmt.Sprintf("127.0.0.1:%d", tport)}
	for _, dest := range refusals {
		resp, body, err := rawExchange(t, fp.FwdAddr, "CONNECT "+dest+" HTTP/1.1\r\nHost: "+dest+"\r\n\r\n")
		if err != nil {
			t.Fatalf("CONNECT %s: %v", dest, err)
		}
		wantRefusal(t, resp, body, http.StatusForbidden, "destination_not_allowed")
		if strings.Contains(string(body), "127.0.0.1") {
			t.Errorf("CONNECT %s: the answer names the address: %q", dest, body)
		}
	}
	need(t, "curl")
	res := runClient(t, fp.clientEnv(t, nil), t.TempDir(), "curl", "-sS", "https://unrouted.test.example/")
	if res.err == nil || !strings.Contains(res.stderr, "403") {
		t.Errorf("curl to an unrouted host: %v %q", res.err, res.stderr)
	}
	m := scrape(t, fp.proc)
	if n := m.must(t, "sidekey_forward_connects_total", "result", "refused"); n != float64(len(refusals)+1) {
		t.Errorf("refused = %v, want %d", n, len(refusals)+1)
	}
	if n := m.must(t, "sidekey_forward_connects_total", "result", "tunnelled") + m.must(t, "sidekey_forward_connects_total", "result", "intercepted"); n != 0 {
		t.Errorf("%v CONNECTs served", n)
	}

	// allow_addresses lets the loopback destination through, untouched.
	caDir2 := caDirFor(t)
	fp2 := startForward(t, configYAML(forwardTop(caDir2, tunnel, `allow_addresses: [127.0.0.0/8, "::1"]`),
		[]string{envCred("tok", "UP_TOKEN")}, routes), caDir2, withEnv("UP_TOKEN="+token))
	res = runClient(t, fp2.clientEnv(t, nil), t.TempDir(), "curl", "-sS", "--fail-with-body", "--noproxy", "",
		"--cacert", k.pemPath, "-H", "Authorization: Bearer app-own", fmt.Sprintf("https://localhost:%d/through", tport))
	if res.err != nil || res.stdout != "tunnel target\n" {
		t.Fatalf("through the tunnel: %v %q %q", res.err, res.stdout, res.stderr)
	}
	if got, _ := sawAuth.Load().(string); got != "Bearer app-own" {
		t.Errorf("the tunnel changed the request: Authorization %q", got)
	}
	if n := scrape(t, fp2.proc).must(t, "sidekey_forward_connects_total", "result", "tunnelled"); n != 1 {
		t.Errorf("tunnelled = %v", n)
	}
}

// TestForwardCallers: with callers set, a CONNECT without the caller's
// token is 407 with a Basic challenge, while curl and Python succeed with
// the caller in the proxy URL, and the requests are attributed to it.
func TestForwardCallers(t *testing.T) {
	need(t, "curl", "python3")
	k := newTestPKI(t)
	token, callerTok := secretValue(t), secretValue(t)
	served, apiURL := tokenUpstream(t, k, apiHost, "Bearer "+token)
	caDir := caDirFor(t)
	top := append(forwardTop(caDir), "callers:", "  ci-runner:", "    token: env:SIDEKEY_CALLER_CI")
	fp := startForward(t, configYAML(top, []string{envCred("tok", "UP_TOKEN")},
		[]route{hostRoute("api", apiHost, apiURL, "{credential: tok, as: bearer}", k)}),
		caDir, withEnv("UP_TOKEN="+token, "SIDEKEY_CALLER_CI="+callerTok))
	waitReady(t, fp.proc)

	for _, req := range []string{
		"CONNECT " + apiHost + ":443 HTTP/1.1\r\nHost: " + apiHost + ":443\r\n\r\n",
		"CONNECT " + apiHost + ":443 HTTP/1.1\r\nHost: " + apiHost + ":443\r\nProxy-Authorization: Basic " +
			base64.StdEncoding.EncodeToString([]byte("ci-runner:not-the-token")) + "\r\n\r\n",
		"GET http://" + apiHost + "/plain HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n",
	} {
		resp, body, err := rawExchange(t, fp.FwdAddr, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusProxyAuthRequired || resp.Header.Get("Proxy-Authenticate") != `Basic realm="sidekey"` {
			t.Errorf("%q: %d %v %q", strings.SplitN(req, "\r\n", 2)[0], resp.StatusCode, resp.Header, body)
		}
	}
	work := t.TempDir()
	if res := runClient(t, fp.clientEnv(t, nil), work, "curl", "-sS", "https://"+apiHost+"/anonymous"); res.err == nil || !strings.Contains(res.stderr, "407") {
		t.Errorf("curl without a caller: %v %q", res.err, res.stderr)
	}
	if served.Load() != 0 {
		t.Fatal("a request without a caller reached the upstream")
	}

	env := fp.clientEnv(t, url.UserPassword("ci-runner", callerTok))
	for name, argv := range map[string][]string{
		"curl":          {"curl", "-sS", "--fail-with-body", "https://" + apiHost + "/curl"},
		"python urllib": {"python3", "-c", "import sys, urllib.request\nsys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())", "https://" + apiHost + "/urllib"},
	} {
		res := runClient(t, env, work, argv...)
		path := argv[len(argv)-1][len("https://"+apiHost):]
		if res.err != nil || res.stdout != "hello from "+apiHost+": "+path+"\n" {
			t.Errorf("%s with the caller in the proxy URL: %v %q %q", name, res.err, maskSecrets(res.stdout), maskSecrets(res.stderr))
			continue
		}
		if line := auditLineFor(t, fp.proc, path); line["caller"] != "ci-runner" {
			t.Errorf("%s: audit line %v", name, line)
		}
	}
	if c := callersOf(t, fp.proc)["ci-runner"]; c.Requests != 2 {
		t.Errorf("/v1/callers ci-runner = %+v, want 2 requests", c)
	}
	if n := refusedTotal(t, scrape(t, fp.proc), "caller_unauthenticated"); n != 4 {
		t.Errorf("caller_unauthenticated = %v, want 4", n)
	}
}

// TestForwardStreams: a websocket and server-sent events through an
// intercepted connection, events arriving as they are sent.
func TestForwardStreams(t *testing.T) {
	k := newTestPKI(t)
	token := secretValue(t)
	bin := k.server(t, httpbin.New(httpbin.WithMaxDuration(10*time.Second)), binHost)
	caDir := caDirFor(t)
	fp := startForward(t, configYAML(forwardTop(caDir), []string{envCred("tok", "UP_TOKEN")},
		[]route{hostRoute("bin", binHost, bin.URL, "{credential: tok, as: bearer}", k)}), caDir, withEnv("UP_TOKEN="+token))
	waitReady(t, fp.proc)
	client := fp.goClient(t, nil)

	t.Run("websocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "wss://"+binHost+"/websocket/echo", &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			t.Fatalf("dial through the forward proxy: %v", err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for i, msg := range []string{"hello through the forward proxy", strings.Repeat("x", 100<<10)} {
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil || typ != websocket.MessageText || string(got) != msg {
				t.Fatalf("message %d: %v %v %d bytes", i, err, typ, len(got))
			}
		}
		c.Close(websocket.StatusNormalClosure, "done")
	})

	t.Run("server-sent events", func(t *testing.T) {
		resp, err := client.Get("https://" + binHost + "/sse?count=4&duration=1500ms&delay=0")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		start := time.Now()
		var at []time.Duration
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data:") {
				at = append(at, time.Since(start))
			}
		}
		if len(at) != 4 {
			t.Fatalf("%d events: %v", len(at), sc.Err())
		}
		if at[0] > 400*time.Millisecond || at[3]-at[0] < time.Second {
			t.Errorf("events arrived at %v: held back, not streamed", at)
		}
	})
}

// TestForwardExec: sidekey exec runs curl against a forward proxy of its
// own, which prints the upstream's answer; exec exits with curl's status
// and leaves nothing behind.
func TestForwardExec(t *testing.T) {
	need(t, "curl")
	k := newTestPKI(t)
	token := secretValue(t)
	_, apiURL := tokenUpstream(t, k, apiHost, "Bearer "+token)
	cfgPath := filepath.Join(dataDir(t), "sidekey.yaml")
	writeTestFile(t, cfgPath, configYAML(nil, []string{envCred("tok", "UP_TOKEN")},
		[]route{hostRoute("api", apiHost, apiURL, "{credential: tok, as: bearer}", k)}))
	opts := []procOption{withEnv("UP_TOKEN=" + token)}
	res, p := runExec(t, opts, "-c", cfgPath, "--", "curl", "-sS", "--fail-with-body", "https://"+apiHost+"/exec")
	if res.code != 0 || res.stdout != "hello from "+apiHost+": /exec" {
		t.Fatalf("exit %d, stdout %q, stderr %q", res.code, maskSecrets(res.stdout), maskSecrets(res.stderr))
	}
	if strings.Contains(res.stderr, `"msg":"request"`) {
		t.Errorf("exec logged at info without -v: %q", maskSecrets(res.stderr))
	}
	res, p2 := runExec(t, opts, "-c", cfgPath, "--", "curl", "-sS", "https://unrouted.test.example/")
	if res.code != 56 { // curl: failure receiving network data (the CONNECT's 403)
		t.Errorf("curl refused by the proxy: exec exited %d, want curl's 56; stderr %q", res.code, maskSecrets(res.stderr))
	}
	for _, p := range []*proc{p, p2} {
		for _, sub := range []string{"home", "tmp", "work"} {
			if left := entriesUnder(t, filepath.Join(p.Dir, sub)); len(left) > 0 {
				t.Errorf("sidekey exec left %q in its %s directory", left, sub)
			}
		}
	}
}

// runExec runs sidekey exec ARGS to completion (60 s at most), in a run
// directory of its own.
func runExec(t testing.TB, opts []procOption, args ...string) (result, *proc) {
	t.Helper()
	p := launch(t, newRunDir(t), opts, append([]string{"exec"}, args...)...)
	p.asserted.Store(true)
	if _, ok := p.wait(60 * time.Second); !ok {
		t.Fatalf("sidekey exec did not exit within 60s; log:\n%s", p.tail(40))
	}
	return result{code: p.exitCode, stdout: strings.Join(p.stdout.All(), "\n"), stderr: strings.Join(p.stderr.All(), "\n")}, p
}

// TestForwardReload: a reload that adds a route host is refused while the
// CA was generated (the CA the apps trust covers the old hosts only), and
// one that changes allow_tunnel is applied with the same CA.
func TestForwardReload(t *testing.T) {
	k := newTestPKI(t)
	token := secretValue(t)
	_, apiURL := tokenUpstream(t, k, apiHost, "Bearer "+token)
	caDir := caDirFor(t)
	creds := []string{envCred("tok", "UP_TOKEN")}
	routes := []route{hostRoute("api", apiHost, apiURL, "{credential: tok, as: bearer}", k)}
	fp := startForward(t, configYAML(forwardTop(caDir), creds, routes), caDir, withEnv("UP_TOKEN="+token))
	before, err := os.ReadFile(fp.CertOut)
	if err != nil {
		t.Fatal(err)
	}
	added := append(routes, hostRoute("git", gitHost, apiURL, "{credential: tok, as: bearer}", k))
	applied, lines := reloadWith(t, fp.proc, configYAML(forwardTop(caDir), creds, added))
	if applied {
		t.Fatal("a reload that adds a route host to a generated CA was applied")
	}
	found := false
	for _, l := range lines {
		if p, _ := l["problem"].(string); strings.Contains(p, gitHost) && strings.Contains(p, "name constraints") {
			found = true
		}
		if e, _ := l["error"].(string); strings.Contains(e, gitHost) && strings.Contains(e, "name constraints") {
			found = true
		}
	}
	if !found {
		t.Errorf("the refusal does not name the host and why: %v", lines)
	}
	if applied, lines := reloadWith(t, fp.proc, configYAML(forwardTop(caDir, "allow_tunnel: [pypi.org]"), creds, routes)); !applied {
		t.Fatalf("an allow_tunnel change was refused: %v", lines)
	}
	after, _ := os.ReadFile(fp.CertOut)
	if string(after) != string(before) {
		t.Error("cert_out changed on reload")
	}
	client := fp.goClient(t, nil)
	resp, err := client.Get("https://" + apiHost + "/after-reload")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	captureResponse(t, "GET after reload", resp, b)
	if resp.StatusCode != 200 {
		t.Errorf("after the reloads: %d %q", resp.StatusCode, maskSecrets(string(b)))
	}
}
