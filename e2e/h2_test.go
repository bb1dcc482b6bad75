package e2e

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireCurlHTTP2 skips the test unless curl is installed with HTTP/2.
func requireCurlHTTP2(t testing.TB) {
	t.Helper()
	out, err := exec.Command("curl", "-V").Output()
	if err != nil {
		t.Skipf("needs curl: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "Features:"); ok && slices.Contains(strings.Fields(rest), "HTTP2") {
			return
		}
	}
	t.Skip("needs a curl built with HTTP/2 (curl -V lists no HTTP2 feature)")
}

// TestCurlH2CPriorKnowledge: curl speaking HTTP/2 with prior knowledge to
// the app listener reaches an HTTP/1.1 route: HTTP/2 was used (curl's
// %{http_version} is 2), the upstream got an HTTP/1.1 request with the
// credential in place of the app's Authorization and the body whole, and
// the answer came back whole.
func TestCurlH2CPriorKnowledge(t *testing.T) {
	requireCurlHTTP2(t)
	tok := secretValue(t)
	var (
		mu     sync.Mutex
		protos []string
		bodies []string
	)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		protos, bodies = append(protos, r.Proto), append(bodies, string(b))
		mu.Unlock()
		io.WriteString(w, "answer from the upstream")
	})
	p := startSidekey(t, configYAML(nil, []string{envCred("tok", "E2E_H2C_TOKEN")},
		[]route{{name: "h1", prefix: "/h1/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}),
		withEnv("E2E_H2C_TOKEN="+tok))
	waitOK(t, p, "/h1/ready")

	out, err := exec.Command("curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
		"-H", "Authorization: Bearer app-own-value", "-H", "X-Test-Id: curl-h2c",
		"--data-binary", "hello over h2c", "-w", "\n%{http_version} %{http_code}",
		p.ProxyURL+"/h1/echo?q=1").CombinedOutput()
	recordCapture("curl --http2-prior-knowledge in "+t.Name(), out)
	if err != nil {
		t.Fatalf("curl --http2-prior-knowledge: %v: %s", err, maskSecrets(string(out)))
	}
	body, last, _ := strings.Cut(string(out), "\n")
	if last != "2 200" || body != "answer from the upstream" {
		t.Fatalf("curl got %q, then %q; want the upstream's answer, then HTTP version 2 and status 200", maskSecrets(body), last)
	}
	seen, ok := up.byID("curl-h2c")
	if !ok {
		t.Fatal("the upstream did not get the request")
	}
	if got := seen.Header.Values("Authorization"); !slices.Equal(got, []string{"Bearer " + tok}) {
		t.Errorf("the upstream got Authorization %q, want the injected credential only", maskSecrets(strings.Join(got, " | ")))
	}
	if seen.Path != "/echo" || seen.RawQuery != "q=1" {
		t.Errorf("the upstream got %s?%s, want /echo?q=1", seen.Path, seen.RawQuery)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(protos) != 2 || protos[1] != "HTTP/1.1" || bodies[1] != "hello over h2c" {
		t.Errorf("the upstream got %q with bodies %q, want HTTP/1.1 with the body sent", protos, bodies)
	}
}

// h2specVersion is the h2spec the test installs: its last release.
const h2specVersion = "v2.2.1+incompatible"

// h2specBinary returns an h2spec binary: H2SPEC when set, else one built
// with go install into the user's cache directory on first use (about
// 10 s; CI's first run of the suite builds it).
func h2specBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("H2SPEC"); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "sidekey-e2e", "h2spec-"+h2specVersion)
	bin := filepath.Join(dir, "h2spec")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "install", "github.com/summerwind/h2spec/cmd/h2spec@"+h2specVersion)
	cmd.Dir = dir // outside this module: go install pkg@version builds it on its own
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installing h2spec %s: %v\n%s", h2specVersion, err, out)
	}
	return bin
}

// h2specRun is one run of h2spec: its summary and the cases that failed.
type h2specRun struct {
	tests, passed, skipped, failed int
	failures                       []string // "package: case"
}

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// runH2spec runs every h2spec case against the h2c server at addr.
func runH2spec(t testing.TB, bin, addr, report string) h2specRun {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-o", "3", "-j", report).CombinedOutput()
	m := h2specSummary.FindSubmatch(out)
	if m == nil {
		t.Fatalf("h2spec against %s printed no summary (%v):\n%s", addr, err, out)
	}
	var r h2specRun
	for i, p := range []*int{&r.tests, &r.passed, &r.skipped, &r.failed} {
		*p, _ = strconv.Atoi(string(m[i+1]))
	}
	x, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Suites []struct {
			Cases []struct {
				Package string    `xml:"package,attr"`
				Name    string    `xml:"classname,attr"`
				Error   *struct{} `xml:"error"`
				Failure *struct{} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(x, &suites); err != nil {
		t.Fatalf("h2spec's report: %v", err)
	}
	for _, s := range suites.Suites {
		for _, c := range s.Cases {
			if c.Error != nil || c.Failure != nil {
				r.failures = append(r.failures, c.Package+": "+c.Name)
			}
		}
	}
	if len(r.failures) != r.failed {
		t.Fatalf("h2spec's report lists %d failed cases, its summary %d", len(r.failures), r.failed)
	}
	return r
}

// TestH2Spec runs h2spec, the HTTP/2 conformance suite, against the h2c
// listener of the built binary (a route to a trivial upstream; h2spec
// calls / with its target as the Host, 127.0.0.1, which the Host defence
// admits) and against a plain net/http server speaking HTTP/1.1 and h2c
// on the same machine. sidekey must pass at least as many cases, and
// every case net/http passes, and keep its log JSON throughout.
func TestH2Spec(t *testing.T) {
	bin := h2specBinary(t)
	dir := dataDir(t)

	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	p := startSidekey(t, configYAML(nil, nil, []route{{name: "all", prefix: "/", upstream: up.URL}}))
	waitOK(t, p, "/")
	sk := runH2spec(t, bin, p.ProxyAddr, filepath.Join(dir, "sidekey.xml"))
	// h2spec's malformed frames are logged, if at all, as sidekey logs
	// everything: one JSON object a line.
	for i, line := range p.Logs() {
		if !json.Valid([]byte(line)) {
			t.Errorf("sidekey's log line %d is not JSON: %q", i+1, maskSecrets(line))
			break
		}
	}

	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain := &http.Server{Protocols: &protos, ErrorLog: discardLog(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})}
	go func() { _ = plain.Serve(ln) }()
	t.Cleanup(func() { plain.Close() })
	std := runH2spec(t, bin, ln.Addr().String(), filepath.Join(dir, "nethttp.xml"))

	t.Logf("h2spec %s: sidekey %d tests, %d passed, %d skipped, %d failed; net/http %d tests, %d passed, %d skipped, %d failed",
		h2specVersion, sk.tests, sk.passed, sk.skipped, sk.failed, std.tests, std.passed, std.skipped, std.failed)
	t.Logf("sidekey fails: %s", strings.Join(sk.failures, "; "))
	t.Logf("net/http fails: %s", strings.Join(std.failures, "; "))
	if sk.passed < std.passed {
		t.Errorf("sidekey passed %d h2spec cases, net/http %d", sk.passed, std.passed)
	}
	for _, f := range sk.failures {
		if !slices.Contains(std.failures, f) {
			t.Errorf("sidekey fails a case net/http passes: %s", f)
		}
	}
}

// discardLog is a server error log that writes nowhere: h2spec's
// malformed frames would fill the test's output.
func discardLog() *log.Logger {
	return log.New(io.Discard, "", 0)
}
