package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sidekey/sidekey/config"
)

func TestProxyURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:3128": "http://127.0.0.1:3128", ":3128": "http://127.0.0.1:3128",
		"0.0.0.0:3128": "http://127.0.0.1:3128", "[::]:3128": "http://[::1]:3128",
		"[::1]:3128": "http://[::1]:3128", "10.0.0.5:3128": "http://10.0.0.5:3128", "localhost:3128": "http://localhost:3128",
	} {
		if got := proxyURL(listen, ""); got != want {
			t.Errorf("proxyURL(%q) = %q, want %q", listen, got, want)
		}
	}
	if got := proxyURL("127.0.0.1:3128", "ci:t%2Fk"); got != "http://ci:t%2Fk@127.0.0.1:3128" {
		t.Errorf("with userinfo: %q", got)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/run/sidekey/ca.pem": "/run/sidekey/ca.pem", "a b": "'a b'", "it's": `'it'\''s'`, "": "''", "$HOME": "'$HOME'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestCmdEnv: the lines name the listener and the CA files, each variable
// the SPEC lists, and with callers say how to name one without printing a
// token.
func TestCmdEnv(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "sidekey.yaml")
	src := `routes:
  - {name: r, match: {host: api.test.example}, upstream: "https://api.test.example"}
callers:
  ci-runner: {token: env:SIDEKEY_CALLER_CI}
forward_proxy:
  listen: 0.0.0.0:3128
  ca: {cert_out: /run/sidekey/ca.pem, bundle_out: /run/sidekey/ca-bundle.pem}
`
	if err := os.WriteFile(cfgFile, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SIDEKEY_CALLER_CI", "caller-secret-value")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"env", "-c", cfgFile}, nil, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	text := out.String()
	want := map[string]string{
		"HTTPS_PROXY": "http://127.0.0.1:3128", "https_proxy": "http://127.0.0.1:3128",
		"HTTP_PROXY": "http://127.0.0.1:3128", "http_proxy": "http://127.0.0.1:3128",
		"NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1",
		"SSL_CERT_FILE": "/run/sidekey/ca-bundle.pem", "REQUESTS_CA_BUNDLE": "/run/sidekey/ca-bundle.pem",
		"CURL_CA_BUNDLE": "/run/sidekey/ca-bundle.pem", "GIT_SSL_CAINFO": "/run/sidekey/ca-bundle.pem",
		"AWS_CA_BUNDLE": "/run/sidekey/ca-bundle.pem", "NODE_EXTRA_CA_CERTS": "/run/sidekey/ca.pem",
		"NODE_USE_ENV_PROXY": "1",
	}
	got := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok && !strings.HasPrefix(line, "#") {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d variables, want %d:\n%s", len(got), len(want), text)
	}
	if !strings.Contains(text, `P="http://ci-runner:${SIDEKEY_CALLER_CI}@127.0.0.1:3128"`) {
		t.Errorf("no caller hint:\n%s", text)
	}
	if strings.Contains(text, "caller-secret-value") {
		t.Error("env printed a caller token")
	}

	if code := run(context.Background(), []string{"env", "-c", writeFile(t, dir, "none.yaml", "listen: 127.0.0.1:8080\n")}, nil, &out, &errOut); code != exitFailed {
		t.Errorf("a config without forward_proxy: exit %d", code)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExecConfig(t *testing.T) {
	cfg := &config.Config{Listen: "unix:/run/s.sock", Admin: config.Admin{Listen: "127.0.0.1:9901"},
		TLS: &config.TLS{Listen: ":8443"}, Log: config.Log{Level: "debug"},
		ForwardProxy: &config.ForwardProxy{Listen: "0.0.0.0:3128", AllowTunnel: []string{"pypi.org"},
			CA: config.ForwardCA{CertOut: "/run/ca.pem", Cert: &config.Ref{Kind: config.RefFile, Name: "/etc/ca.pem"}}}}
	run := execConfig(cfg, "/tmp/x", false)
	if run.Listen != "127.0.0.1:0" || run.Admin.Listen != "127.0.0.1:0" || run.TLS != nil || run.Log.Level != "warn" ||
		run.ForwardProxy.Listen != "127.0.0.1:0" || run.ForwardProxy.AllowTunnel[0] != "pypi.org" ||
		run.ForwardProxy.CA != (config.ForwardCA{CertOut: "/tmp/x/ca.pem", BundleOut: "/tmp/x/ca-bundle.pem"}) {
		t.Errorf("exec config %+v, forward %+v", run, run.ForwardProxy)
	}
	if cfg.Listen != "unix:/run/s.sock" || cfg.ForwardProxy.Listen != "0.0.0.0:3128" || cfg.TLS == nil {
		t.Error("execConfig changed the config it was given")
	}
	if run := execConfig(&config.Config{Log: config.Log{Level: "debug"}}, "/tmp/x", true); run.ForwardProxy == nil || run.Log.Level != "debug" {
		t.Errorf("without forward_proxy, verbose: %+v", run)
	}
}

func TestRunChildStatus(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want int
	}{
		{[]string{"sh", "-c", "exit 0"}, 0},
		{[]string{"sh", "-c", "exit 3"}, 3},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
		{[]string{"/nonexistent/command"}, 127},
	} {
		if got := runChild(tc.argv, os.Environ(), nil, io.Discard, io.Discard); got != tc.want {
			t.Errorf("%q: status %d, want %d", tc.argv, got, tc.want)
		}
	}
}

// TestCmdExec runs a command against the proxy exec starts: the command
// reaches a route host through the forward proxy with the credential
// injected, trusting the CA exec wrote, and exec leaves nothing behind.
func TestCmdExec(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "upstream saw "+r.Header.Get("Authorization"))
	}))
	defer up.Close()
	dir, tmp := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("EXEC_TEST_TOKEN", "exec-upstream-token")
	cfgFile := writeFile(t, dir, "sidekey.yaml", `credentials:
  tok: {source: env, name: EXEC_TEST_TOKEN}
routes:
  - {name: r, match: {host: api.test.example}, upstream: "`+up.URL+`", inject: {credential: tok}}
`)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	// The command checks the files it was given and calls the route host
	// through the proxy, trusting the CA by SSL_CERT_FILE's bundle.
	script := `test -s "$SSL_CERT_FILE" && test -s "$NODE_EXTRA_CA_CERTS" && curl -sS --fail https://api.test.example/x`
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"exec", "-c", cfgFile, "--", "sh", "-c", script}, nil, &out, &errOut)
	if code != exitOK || out.String() != "upstream saw Bearer exec-upstream-token" {
		t.Fatalf("exit %d, output %q: %s", code, out.String(), errOut.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("exec left %d entries in TMPDIR", len(left))
	}
	if code := run(context.Background(), []string{"exec", "-c", cfgFile, "--", "sh", "-c", "exit 7"}, nil, &out, &errOut); code != 7 {
		t.Errorf("exit %d, want the command's 7", code)
	}
	if code := run(context.Background(), []string{"exec", "-c", cfgFile}, nil, &out, &errOut); code != exitUsage {
		t.Errorf("no command: exit %d", code)
	}
}

// TestRunChildForwardsSignals: SIGTERM sent to sidekey exec reaches the
// command, whose own status is what exec exits with.
func TestRunChildForwardsSignals(t *testing.T) {
	pr, pw := io.Pipe()
	status := make(chan int, 1)
	go func() {
		status <- runChild([]string{"sh", "-c", `trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done`}, os.Environ(), nil, pw, io.Discard)
		pw.Close()
	}()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(pr, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("child: %q %v", buf, err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := <-status; got != 42 {
		t.Errorf("status %d, want the child's 42 after its TERM trap", got)
	}
}
