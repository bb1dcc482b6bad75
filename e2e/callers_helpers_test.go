package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// callerInfo is one entry of GET /v1/callers.
type callerInfo struct {
	Name     string    `json:"name"`
	Kind     string    `json:"kind"`
	Requests uint64    `json:"requests"`
	Refused  uint64    `json:"refused"`
	LastSeen time.Time `json:"last_seen"`
}

// callersOf reads GET /v1/callers, by name.
func callersOf(t testing.TB, p *proc) map[string]callerInfo {
	t.Helper()
	code, body := p.admin(t, http.MethodGet, "/v1/callers", "")
	if code != http.StatusOK {
		t.Fatalf("/v1/callers = %d: %s", code, maskSecrets(string(body)))
	}
	var list []callerInfo
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("/v1/callers is not a JSON list: %v: %s", err, maskSecrets(string(body)))
	}
	out := map[string]callerInfo{}
	for _, c := range list {
		out[c.Name] = c
	}
	return out
}

// refusedTotal is sidekey_callers_refused_total{reason} in one scrape.
func refusedTotal(t testing.TB, m metrics, reason string) float64 {
	t.Helper()
	return m.must(t, "sidekey_callers_refused_total", "reason", reason)
}

// refusalReasons are the reasons of sidekey_callers_refused_total.
var refusalReasons = []string{"host_not_allowed", "cross_origin_refused", "caller_unauthenticated", "caller_not_allowed"}

// wantRefusal checks a refusal: the status and the JSON error code, and
// for 401 the WWW-Authenticate challenge.
func wantRefusal(t testing.TB, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d; body %q", resp.StatusCode, status, maskSecrets(string(body)))
		return
	}
	m, err := jsonError(body)
	if err != nil {
		t.Error(err)
		return
	}
	if m["error"] != code {
		t.Errorf("error %v, want %s; body %q", m["error"], code, maskSecrets(string(body)))
	}
	if status == http.StatusUnauthorized {
		if got := resp.Header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != `Bearer realm="sidekey"` {
			t.Errorf("WWW-Authenticate %q, want exactly Bearer realm=\"sidekey\"", got)
		}
	}
}

// leakedInto lists the places of a request an upstream saw that hold one
// of values: any header (by name), the path, the raw query and the
// decoded query.
func leakedInto(seen seenRequest, values ...string) []string {
	var out []string
	has := func(s string) bool {
		for _, v := range values {
			if v != "" && strings.Contains(s, v) {
				return true
			}
		}
		return false
	}
	for name, vs := range seen.Header {
		for _, v := range vs {
			if has(v) || has(name) {
				out = append(out, "header "+name)
			}
		}
	}
	if has(seen.Path) {
		out = append(out, "path")
	}
	if has(seen.RawQuery) {
		out = append(out, "raw query")
	}
	if q, err := url.QueryUnescape(seen.RawQuery); err == nil && has(q) {
		out = append(out, "decoded query")
	}
	if has(seen.Host) {
		out = append(out, "host")
	}
	return out
}

// wantNoValue fails when data holds one of values; it names the value by
// its index, never by itself.
func wantNoValue(t testing.TB, where, data string, values ...string) {
	t.Helper()
	for i, v := range values {
		if strings.Contains(data, v) {
			t.Errorf("secret value #%d found in %s", i, where)
		}
	}
}

// basicAuth renders an Authorization/Proxy-Authorization Basic value and
// remembers its encoding as a secret: it carries the password.
func basicAuth(t testing.TB, user, password string) string {
	enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	rememberSecret(t, enc)
	return "Basic " + enc
}

// waitOKWith polls GET path with hdr until it answers 200.
func waitOKWith(t testing.TB, p *proc, path string, hdr ...string) {
	t.Helper()
	eventually(t, 15*time.Second, "GET "+path+" answers 200", func() error {
		resp, body, err := p.send(t, http.MethodGet, p.ProxyURL+path, nil, hdr...)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", resp.StatusCode, maskSecrets(string(body)))
		}
		return nil
	})
}

// auditLineFor waits for the audit line of the request whose path holds id.
func auditLineFor(t testing.TB, p *proc, id string) map[string]any {
	t.Helper()
	line, err := p.waitLog(10*time.Second, func(e map[string]any) bool {
		path, _ := e["path"].(string)
		return e["msg"] == "request" && strings.Contains(path, id)
	})
	if err != nil {
		t.Fatalf("no audit line for %s: %v", id, err)
	}
	return line
}

// ---- unix sockets ----

// unixClient is an HTTP client whose connections to localhost:80 go to
// the unix socket at path, and every other connection over TCP (the admin
// API).
func unixClient(path string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:              nil,
			DisableCompression: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var d net.Dialer
				if addr == "localhost:80" {
					return d.DialContext(ctx, "unix", path)
				}
				return d.DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// useUnix points p's client at the unix socket at path: requests to
// http://localhost (p.ProxyURL from now on) go there, the admin API's
// still over TCP.
func useUnix(p *proc, path string) {
	p.Client.CloseIdleConnections()
	p.Client = unixClient(path)
	p.ProxyURL = "http://localhost"
}

// socketDir makes a short directory for unix sockets that every user may
// traverse (0755), outside the suite's private tree, which other users
// cannot enter. It is removed at cleanup.
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "skcl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// staleSocket leaves a unix socket file at path with no server behind it,
// as a crashed process would.
func staleSocket(t testing.TB, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the stale socket %s is not there: %v %v", path, fi, err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Fatalf("the stale socket %s accepts connections", path)
	}
}

// socketMode returns the permission bits of the socket at path, failing
// the test when it is missing or not a socket.
func socketMode(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is %v, not a socket", path, fi.Mode())
	}
	return fi.Mode().Perm()
}

// curlResult is what a curl run as another user got.
type curlResult struct {
	exit   int    // curl's exit code (7: could not connect)
	status int    // the HTTP status; 0 without an answer
	body   string // the answer's body
	stderr string
}

// curlAs runs curl as user (runuser, so the test must run as root) against
// the unix socket sock and returns what it got.
func curlAs(t testing.TB, user, sock, rawURL string, hdr ...string) curlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-u", user, "--", "curl", "-sS", "--max-time", "10", "--unix-socket", sock, "-w", "\n%{http_code}"}
	for _, h := range hdr {
		args = append(args, "-H", h)
	}
	args = append(args, rawURL)
	cmd := exec.CommandContext(ctx, "runuser", args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r curlResult
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("runuser -u %s curl: %v", user, err)
	}
	r.stderr = stderr.String()
	out := stdout.String()
	recordCapture(fmt.Sprintf("curl as %s in %s", user, t.Name()), []byte(out+"\n"+r.stderr))
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		r.body = out[:i]
		r.status, _ = strconv.Atoi(strings.TrimSpace(out[i+1:]))
	}
	return r
}

// nonLoopbackIPv4 returns an IPv4 address of this machine that is not
// loopback, or "" when it has none.
func nonLoopbackIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}
