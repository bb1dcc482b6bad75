package e2e

import (
	"github.com/sidekey/sidekey/e2e/internal/linelog"

	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proc is one sidekey process started by the suite.
type proc struct {
	Name       string // the test that started it
	Dir        string // the process's private directory (scanned for secrets)
	ConfigPath string
	PID        int
	ProxyAddr  string // 127.0.0.1:port of the app-facing listener
	AdminAddr  string // 127.0.0.1:port of the admin API
	ProxyURL   string // http://ProxyAddr
	AdminURL   string // http://AdminAddr
	// Client talks to the proxy and the admin API over keep-alive
	// connections; it never uses a proxy from the environment.
	Client *http.Client

	cmd      *exec.Cmd
	stderr   *linelog.Log
	stdout   *linelog.Log
	exited   chan struct{} // closed once the process has exited and its output is read
	exitCode int           // valid once exited is closed
	termOnce sync.Once
	asserted atomic.Bool // the test checked the exit itself
}

type procOpts struct {
	env         []string
	stdin       string
	stdinConfig bool
	stderrGate  *gate
	bin         string               // the program to run; "" is binPath
	attr        *syscall.SysProcAttr // e.g. another user's credentials
}

// procOption adjusts how a sidekey process is started.
type procOption func(*procOpts)

// withEnv adds KEY=VALUE pairs to the process environment.
func withEnv(kv ...string) procOption {
	return func(o *procOpts) { o.env = append(o.env, kv...) }
}

// withStdinConfig makes startSidekey pass the config on standard input
// (`run -c -`) instead of in a file.
func withStdinConfig() procOption {
	return func(o *procOpts) { o.stdinConfig = true }
}

// withStderrGate passes the process's standard error through g: once the
// test closes g's stall, nothing more is read from it until release.
func withStderrGate(g *gate) procOption {
	return func(o *procOpts) { o.stderrGate = g }
}

// gate is a writer that passes writes on until stall is closed, then
// blocks them until release is closed: a log reader that stops reading.
type gate struct {
	w       io.Writer
	stall   chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{stall: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) Write(b []byte) (int, error) {
	select {
	case <-g.stall:
		<-g.release
	default:
	}
	return g.w.Write(b)
}

var procSeq atomic.Int64

// newRunDir makes a fresh directory for one sidekey process: its config,
// its working directory, TMPDIR and HOME all live there.
func newRunDir(t testing.TB) string {
	t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dir := filepath.Join(rootDir, "run", fmt.Sprintf("%03d-%s", procSeq.Add(1), name))
	for _, sub := range []string{"work", "tmp", "home"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// dataDir makes a fresh directory for a test's own files (credential
// sources). Files written with writeSecretFile are excluded from the scan;
// anything else appearing there is scanned.
func dataDir(t testing.TB) string {
	t.Helper()
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dir := filepath.Join(rootDir, "data", fmt.Sprintf("%03d-%s", procSeq.Add(1), name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeTestFile writes a file the test owns and excludes it from the
// secret scan.
func writeTestFile(t testing.TB, path, content string) {
	t.Helper()
	markWritten(path)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeSecretFile replaces path atomically (write a sibling, rename over)
// with content, as a secret manager or kubelet would.
func writeSecretFile(t testing.TB, path, content string) {
	t.Helper()
	if err := replaceFile(path, content); err != nil {
		t.Fatal(err)
	}
}

func replaceFile(path, content string) error {
	tmp := path + ".tmp"
	markWritten(path)
	markWritten(tmp)
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// startSidekey writes yamlText to a config file, runs `sidekey run -c` on
// it and waits (10 s at most) until both the proxy and the admin listener
// have logged their addresses. On cleanup the process gets SIGTERM and
// must exit 0.
func startSidekey(t testing.TB, yamlText string, opts ...procOption) *proc {
	t.Helper()
	dir := newRunDir(t)
	var o procOpts
	for _, f := range opts {
		f(&o)
	}
	cfg := filepath.Join(dir, "sidekey.yaml")
	if o.stdinConfig {
		cfg = "-"
		opts = append(opts, func(o *procOpts) { o.stdin = yamlText })
	} else {
		writeTestFile(t, cfg, yamlText)
	}
	p := launch(t, dir, opts, "run", "-c", cfg)
	p.ConfigPath = cfg

	addrs := map[string]string{}
	_, err := p.waitLog(10*time.Second, func(e map[string]any) bool {
		if e["msg"] == "listening" {
			l, _ := e["listener"].(string)
			a, _ := e["addr"].(string)
			if l != "" && a != "" {
				addrs[l] = a
			}
		}
		return addrs["proxy"] != "" && addrs["admin"] != ""
	})
	if err != nil {
		t.Fatalf("sidekey did not log both listening lines (proxy %q, admin %q): %v\nconfig:\n%s\nlog:\n%s",
			addrs["proxy"], addrs["admin"], err, yamlText, p.tail(60))
	}
	p.ProxyAddr, p.AdminAddr = addrs["proxy"], addrs["admin"]
	p.ProxyURL, p.AdminURL = "http://"+p.ProxyAddr, "http://"+p.AdminAddr
	return p
}

// result is the outcome of a sidekey command run to completion.
type result struct {
	code   int
	stdout string
	stderr string
}

// runSidekey runs a sidekey command that is expected to exit by itself
// (within 20 s) and returns its exit code and output.
func runSidekey(t testing.TB, opts []procOption, args ...string) result {
	t.Helper()
	p := launch(t, newRunDir(t), opts, args...)
	p.asserted.Store(true)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Fatalf("sidekey %s did not exit within 20s; log:\n%s", strings.Join(args, " "), p.tail(40))
	}
	return result{code: p.exitCode, stdout: strings.Join(p.stdout.All(), "\n"), stderr: strings.Join(p.stderr.All(), "\n")}
}

func launch(t testing.TB, dir string, opts []procOption, args ...string) *proc {
	t.Helper()
	var o procOpts
	for _, f := range opts {
		f(&o)
	}
	bin := binPath
	if o.bin != "" {
		bin = o.bin
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = o.attr
	cmd.Dir = filepath.Join(dir, "work")
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(dir, "home"),
		"TMPDIR=" + filepath.Join(dir, "tmp"),
	}, o.env...)
	if o.stdin != "" {
		cmd.Stdin = strings.NewReader(o.stdin)
	}
	p := &proc{
		Name:   t.Name(),
		Dir:    dir,
		cmd:    cmd,
		stderr: linelog.New(),
		stdout: linelog.New(),
		exited: make(chan struct{}),
		Client: &http.Client{
			Timeout: 60 * time.Second,
			Transport: &http.Transport{
				Proxy:               nil,
				DisableCompression:  true,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     30 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	cmd.Stderr = p.stderr
	if g := o.stderrGate; g != nil {
		g.w = p.stderr
		cmd.Stderr = g
	}
	cmd.Stdout = p.stdout
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sidekey: %v", err)
	}
	p.PID = cmd.Process.Pid
	registerProc(p)
	go func() {
		err := cmd.Wait()
		p.stderr.Flush()
		p.stdout.Flush()
		p.exitCode = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) && p.exitCode == 0 {
			p.exitCode = -1
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Client.CloseIdleConnections()
		code, ok := p.terminate(25 * time.Second)
		if !p.asserted.Load() {
			switch {
			case !ok:
				t.Errorf("sidekey (pid %d) did not exit within 25s of SIGTERM; killed", p.PID)
			case code != 0:
				t.Errorf("sidekey (pid %d) exited %d after SIGTERM, want 0", p.PID, code)
			}
		}
		if t.Failed() {
			t.Logf("sidekey (pid %d) log tail:\n%s", p.PID, p.tail(80))
		}
	})
	return p
}

// signal sends sig to the process (no-op once it has exited).
func (p *proc) signal(sig os.Signal) {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// terminate sends SIGTERM once and waits up to timeout for the exit. ok is
// false when the process had to be killed.
func (p *proc) terminate(timeout time.Duration) (code int, ok bool) {
	p.termOnce.Do(func() { p.signal(syscall.SIGTERM) })
	return p.wait(timeout)
}

// wait waits up to timeout for the process to exit; past it the process is
// killed and ok is false.
func (p *proc) wait(timeout time.Duration) (code int, ok bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return p.exitCode, true
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return p.exitCode, false
	}
}

// Logs returns the stderr lines logged so far.
func (p *proc) Logs() []string { return p.stderr.All() }

// tail renders the last n log lines with every known secret masked.
func (p *proc) tail(n int) string {
	lines := p.stderr.All()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if so := p.stdout.All(); len(so) > 0 {
		out += "\nstdout:\n" + strings.Join(so, "\n")
	}
	return maskSecrets(out)
}

// waitLog waits until a JSON log line satisfies match, scanning from the
// first line. It returns an error when timeout passes or the process exits
// first.
func (p *proc) waitLog(timeout time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next, exited := 0, false
	for {
		lines, notify := p.stderr.Since(next)
		next += len(lines)
		for _, ln := range lines {
			var e map[string]any
			if json.Unmarshal([]byte(ln), &e) == nil && match(e) {
				return e, nil
			}
		}
		if exited {
			return nil, fmt.Errorf("sidekey exited (code %d) first", p.exitCode)
		}
		select {
		case <-notify:
		case <-p.exited:
			exited = true
		case <-timer.C:
			return nil, fmt.Errorf("no matching log line within %v", timeout)
		}
	}
}
