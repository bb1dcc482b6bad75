package acme

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/wfe"
)

// TestCurlHTTP2OverTLS: curl --http2 against the TLS listener, with the
// certificate sidekey obtained from Pebble, negotiates h2 by ALPN and
// reaches an HTTP/1.1 route (curl's %{http_version} is 2, the upstream
// gets HTTP/1.1); --http1.1 on the same listener still gets HTTP/1.1, so
// the listener offers both.
func TestCurlHTTP2OverTLS(t *testing.T) {
	out, err := exec.Command("curl", "-V").Output()
	if err != nil {
		t.Skipf("needs curl: %v", err)
	}
	if !strings.Contains(string(out), " HTTP2") {
		t.Skip("needs a curl built with HTTP/2 (curl -V lists no HTTP2 feature)")
	}
	var (
		mu     sync.Mutex
		protos []string
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		protos = append(protos, r.Proto)
		mu.Unlock()
		io.WriteString(w, "ok "+r.URL.Path+" "+string(b))
	}))
	t.Cleanup(up.Close)

	data := t.TempDir()
	p := newPebble(t, data)
	sk := startSidekey(t, data, acmeConfig(p, up.URL), tlsListeners)
	p.start(t, port(t, sk.Addrs["tls"]), 3600)
	sk.waitReady(t, 30*time.Second)
	root := filepath.Join(data, "pebble-root.pem")
	if err := os.WriteFile(root, p.mgmtGet(t, wfe.RootCertPath+"0"), 0o600); err != nil {
		t.Fatal(err)
	}

	tlsPort := strconv.Itoa(port(t, sk.Addrs["tls"]))
	curl := func(version string) (body, proto string) {
		t.Helper()
		out, err := exec.Command("curl", "-sS", "--max-time", "10", version, "--cacert", root,
			"--resolve", domain+":"+tlsPort+":127.0.0.1", "--data-binary", "body",
			"-w", "\n%{http_version} %{http_code}", "https://"+domain+":"+tlsPort+"/hello").CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v: %s", version, err, out)
		}
		body, last, _ := strings.Cut(string(out), "\n")
		code := ""
		proto, code, _ = strings.Cut(last, " ")
		if code != "200" {
			t.Fatalf("curl %s: status %s, body %q", version, code, body)
		}
		return body, proto
	}
	if body, proto := curl("--http2"); proto != "2" || body != "ok /hello body" {
		t.Errorf("curl --http2: HTTP version %q, body %q; want 2 and the upstream's answer", proto, body)
	}
	if body, proto := curl("--http1.1"); proto != "1.1" || body != "ok /hello body" {
		t.Errorf("curl --http1.1: HTTP version %q, body %q; want 1.1 and the upstream's answer", proto, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(protos, []string{"HTTP/1.1", "HTTP/1.1"}) {
		t.Errorf("the upstream got %q, want two HTTP/1.1 requests", protos)
	}
}
