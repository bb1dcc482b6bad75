package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// ---- a CA of the test's own, for the upstreams ----

// testPKI is a CA made in the test: it signs the upstreams' certificates,
// and the routes pin it (upstream_tls.ca), as an operator pins a private
// upstream's CA. It has nothing to do with sidekey's forward-proxy CA.
type testPKI struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string // the CA certificate, for upstream_tls.ca and clients
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e upstream CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		SubjectKeyId: []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	k := &testPKI{cert: cert, key: key, pemPath: filepath.Join(dataDir(t), "upstream-ca.pem")}
	writeTestFile(t, k.pemPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return k
}

// server starts h over TLS on 127.0.0.1 with a certificate for names.
func (k *testPKI) server(t testing.TB, h http.Handler, names ...string) *httptest.Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.cert, &key.PublicKey, k.key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// pool trusts the test CA.
func (k *testPKI) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(k.cert)
	return p
}

// hostRoute is a route for host to an upstream of the test PKI at
// upstreamURL (https://127.0.0.1:port), pinned to that PKI and verified
// under host's name.
func hostRoute(name, host, upstreamURL, inject string, k *testPKI) route {
	return route{name: name, host: host, upstream: upstreamURL, inject: inject,
		extra: []string{fmt.Sprintf("upstream_tls: {ca: %s, server_name: %s}", quote("file:"+k.pemPath), host)}}
}

// ---- sidekey with a forward proxy ----

// fwdProc is a sidekey process with a forward-proxy listener.
type fwdProc struct {
	*proc
	FwdAddr   string // 127.0.0.1:port of the forward-proxy listener
	CertOut   string // forward_proxy.ca.cert_out
	BundleOut string // forward_proxy.ca.bundle_out
}

// forwardTop is the forward_proxy section: the listener on an ephemeral
// port, the CA's files in caDir, and extra lines (allow_tunnel, ...).
func forwardTop(caDir string, extra ...string) []string {
	lines := []string{"forward_proxy:", "  listen: 127.0.0.1:0",
		fmt.Sprintf("  ca: {cert_out: %s, bundle_out: %s}", quote(filepath.Join(caDir, "ca.pem")), quote(filepath.Join(caDir, "ca-bundle.pem")))}
	for _, l := range extra {
		lines = append(lines, "  "+l)
	}
	return lines
}

// startForward starts sidekey on yamlText, whose forward_proxy writes its
// CA files into caDir (forwardTop), and finds the forward listener. On
// cleanup, after the process has exited, HOME, TMPDIR and the working
// directory must be empty and caDir must hold cert_out and bundle_out
// and nothing else: nothing else is ever written.
func startForward(t testing.TB, yamlText, caDir string, opts ...procOption) *fwdProc {
	t.Helper()
	p := startSidekey(t, yamlText, opts...)
	fp := &fwdProc{proc: p, CertOut: filepath.Join(caDir, "ca.pem"), BundleOut: filepath.Join(caDir, "ca-bundle.pem")}
	e, err := p.waitLog(5*time.Second, func(e map[string]any) bool { return e["msg"] == "listening" && e["listener"] == "forward" })
	if err != nil {
		t.Fatalf("no forward listener: %v\n%s", err, p.tail(40))
	}
	fp.FwdAddr, _ = e["addr"].(string)
	t.Cleanup(func() {
		code, ok := p.terminate(25 * time.Second)
		p.asserted.Store(true)
		if !ok || code != 0 {
			t.Errorf("sidekey (pid %d) exited %d (killed: %v) after SIGTERM, want 0", p.PID, code, !ok)
		}
		for _, sub := range []string{"home", "tmp", "work"} {
			if left := entriesUnder(t, filepath.Join(p.Dir, sub)); len(left) > 0 {
				t.Errorf("sidekey wrote to its %s directory: %q", sub, left)
			}
		}
		if left := entriesUnder(t, caDir); strings.Join(left, " ") != "ca-bundle.pem ca.pem" {
			t.Errorf("the CA directory holds %q, want exactly ca-bundle.pem and ca.pem", left)
		}
	})
	return fp
}

// caDirFor makes the directory a test's forward-proxy CA files go to.
func caDirFor(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(dataDir(t), "ca")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// entriesUnder lists everything below dir, relative to it, sorted.
func entriesUnder(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// proxyURL is the forward proxy's URL, with a caller when userinfo is set.
func (fp *fwdProc) proxyURL(userinfo *url.Userinfo) string {
	return (&url.URL{Scheme: "http", Host: fp.FwdAddr, User: userinfo}).String()
}

// clientEnv is what sidekey env prints for this process, as KEY=VALUE,
// with PATH and a HOME of the client's own.
func (fp *fwdProc) clientEnv(t testing.TB, userinfo *url.Userinfo) []string {
	t.Helper()
	px := fp.proxyURL(userinfo)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LANG=C.UTF-8"}
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		env = append(env, k+"="+px)
	}
	env = append(env, "NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1")
	for _, k := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE"} {
		env = append(env, k+"="+fp.BundleOut)
	}
	return append(env, "NODE_EXTRA_CA_CERTS="+fp.CertOut, "NODE_USE_ENV_PROXY=1")
}

// goClient is a Go net/http client configured as ProxyFromEnvironment
// would be (the URL given here, not read from this process's environment,
// which Go caches), trusting cert_out.
func (fp *fwdProc) goClient(t testing.TB, userinfo *url.Userinfo) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(fp.CertOut)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("cert_out holds no certificate")
	}
	u, _ := url.Parse(fp.proxyURL(userinfo))
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: pool}, DisableCompression: true}}
}

// ---- running real clients ----

// clientResult is what a client program printed and how it exited.
type clientResult struct {
	stdout, stderr string
	err            error
}

// runClient runs a client program with env (60 s at most); its output is
// captured for the secret scan.
func runClient(t testing.TB, env []string, dir string, argv ...string) clientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = env, dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	recordCapture(fmt.Sprintf("output of %s in %s", argv[0], t.Name()), append(out.Bytes(), errOut.Bytes()...))
	return clientResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

// need skips the test when a program is missing.
func need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s: %v", p, err)
		}
	}
}

// fwdClientBin builds internal/fwdclient into a directory of the test's.
func fwdClientBin(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fwdclient")
	if out, err := exec.Command("go", "build", "-o", path, "./internal/fwdclient").CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/fwdclient: %v\n%s", err, out)
	}
	return path
}

// undiciDir installs undici 6 from npm into a directory of the test's
// own: Node 20's fetch ignores HTTPS_PROXY, undici's EnvHttpProxyAgent
// honours it (Node 24's NODE_USE_ENV_PROXY does the same without it).
func undiciDir(t testing.TB) string {
	t.Helper()
	need(t, "node", "npm")
	dir := t.TempDir()
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", dir, "undici@6")
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install undici@6: %v\n%s", err, out)
	}
	return dir
}
