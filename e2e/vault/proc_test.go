package vaulte2e

import (
	"github.com/sidekey/sidekey/e2e/internal/linelog"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// The tests in binary_test.go run the built sidekey binary against the
// in-process Vault. This file is their process helper: it starts
// `sidekey run -c FILE`, captures its log lines, finds the listeners'
// addresses, stops it with SIGTERM (which must end in exit 0), and checks
// after each test that no secret the test registered appears in anything
// the processes wrote or answered.

// build holds the sidekey binary: SIDEKEY_E2E_BIN, else built once from
// ../../cmd/sidekey into a temporary directory.
var build struct {
	once sync.Once
	path string
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

func sidekeyBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		if prebuilt := os.Getenv("SIDEKEY_E2E_BIN"); prebuilt != "" {
			build.path, build.err = filepath.Abs(prebuilt)
			return
		}
		if build.dir, build.err = os.MkdirTemp("", "sidekey-vault-e2e-bin-"); build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "sidekey")
		cmd := exec.Command("go", "build", "-o", build.path, "./cmd/sidekey")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/sidekey: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatalf("the sidekey binary: %v", build.err)
	}
	return build.path
}

// sidekeyProc is one running `sidekey run`.
type sidekeyProc struct {
	PID      int
	Dir      string // the process's own directory: cwd, HOME, TMPDIR, config
	ProxyURL string
	AdminURL string
	// Client never uses a proxy from the environment.
	Client *http.Client

	hy       *hygiene
	cmd      *exec.Cmd
	stderr   *linelog.Log
	stdout   *linelog.Log
	exited   chan struct{}
	exitCode int
	termOnce sync.Once
	checked  atomic.Bool // the test asserted the exit itself
}

// startSidekey writes yamlText to a config file, runs `sidekey run -c` on
// it with env (KEY=VALUE) added to a minimal environment, and waits (10s at
// most) for both listening lines. At cleanup the process gets SIGTERM and
// must exit 0 within 25s.
func startSidekey(t *testing.T, yamlText string, env ...string) *sidekeyProc {
	t.Helper()
	hy := hygieneOf(t) // its scan runs after the process is stopped
	bin := sidekeyBinary(t)
	dir := t.TempDir()
	for _, sub := range []string{"work", "tmp", "home"} {
		must(t, os.MkdirAll(filepath.Join(dir, sub), 0o755))
	}
	cfg := filepath.Join(dir, "sidekey.yaml")
	must(t, os.WriteFile(cfg, []byte(yamlText), 0o600))
	hy.wrote(cfg)

	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Dir = filepath.Join(dir, "work")
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(dir, "home"),
		"TMPDIR=" + filepath.Join(dir, "tmp"),
	}, env...)
	p := &sidekeyProc{
		Dir:    dir,
		hy:     hy,
		cmd:    cmd,
		stderr: linelog.New(),
		stdout: linelog.New(),
		exited: make(chan struct{}),
		Client: &http.Client{
			Timeout:       60 * time.Second,
			Transport:     &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 32},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	cmd.Stderr, cmd.Stdout = p.stderr, p.stdout
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sidekey: %v", err)
	}
	p.PID = cmd.Process.Pid
	hy.addProc(p)
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
		if !p.checked.Load() {
			switch {
			case !ok:
				t.Errorf("sidekey (pid %d) did not exit within 25s of SIGTERM; killed", p.PID)
			case code != 0:
				t.Errorf("sidekey (pid %d) exited %d after SIGTERM, want 0", p.PID, code)
			}
		}
		if t.Failed() {
			t.Logf("sidekey (pid %d) log tail:\n%s", p.PID, p.tail(60))
		}
	})

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
		p.checked.Store(true) // the start-up failure is the report
		t.Fatalf("sidekey did not log both listening lines (proxy %q, admin %q): %v\nconfig:\n%s\nlog:\n%s",
			addrs["proxy"], addrs["admin"], err, yamlText, p.tail(60))
	}
	p.ProxyURL, p.AdminURL = "http://"+addrs["proxy"], "http://"+addrs["admin"]
	return p
}

// stop sends SIGTERM and fails the test unless the process exits 0 within
// 25s; the cleanup then has nothing left to check.
func (p *sidekeyProc) stop(t *testing.T) {
	t.Helper()
	p.checked.Store(true)
	p.Client.CloseIdleConnections()
	code, ok := p.terminate(25 * time.Second)
	switch {
	case !ok:
		t.Fatalf("sidekey (pid %d) did not exit within 25s of SIGTERM; killed", p.PID)
	case code != 0:
		t.Fatalf("sidekey (pid %d) exited %d after SIGTERM, want 0; log:\n%s", p.PID, code, p.tail(40))
	}
}

// terminate sends SIGTERM once and waits up to timeout; ok is false when
// the process had to be killed.
func (p *sidekeyProc) terminate(timeout time.Duration) (code int, ok bool) {
	p.termOnce.Do(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	})
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

// logEntries decodes every JSON log line so far.
func (p *sidekeyProc) logEntries() []map[string]any {
	var out []map[string]any
	for _, ln := range p.stderr.All() {
		var e map[string]any
		if json.Unmarshal([]byte(ln), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// countLog is how many log lines have the message msg.
func (p *sidekeyProc) countLog(msg string) int {
	n := 0
	for _, e := range p.logEntries() {
		if e["msg"] == msg {
			n++
		}
	}
	return n
}

// tail renders the last n log lines with every registered secret masked.
func (p *sidekeyProc) tail(n int) string {
	lines := p.stderr.All()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if so := p.stdout.All(); len(so) > 0 {
		out += "\nstdout:\n" + strings.Join(so, "\n")
	}
	return p.hy.mask(out)
}

// waitLog waits until a JSON log line satisfies match, scanning from the
// first line; an error when timeout passes or the process exits first.
func (p *sidekeyProc) waitLog(timeout time.Duration, match func(map[string]any) bool) (map[string]any, error) {
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

// do sends one request with p's client, reads the whole body and keeps a
// copy of the answer for the secret scan. hdr holds name/value pairs.
func (p *sidekeyProc) do(method, url string, hdr ...string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n", resp.Status)
	_ = resp.Header.Write(&b)
	b.Write(body)
	p.hy.capture(fmt.Sprintf("the answer to %s %s (pid %d)", method, url, p.PID), b.Bytes())
	return resp.StatusCode, body, err
}

// get sends GET ProxyURL+path.
func (p *sidekeyProc) get(path string, hdr ...string) (int, []byte, error) {
	return p.do(http.MethodGet, p.ProxyURL+path, hdr...)
}

// credEntry is one entry of GET /v1/credentials.
type credEntry struct {
	Name        string    `json:"name"`
	Source      string    `json:"source"`
	Version     uint64    `json:"version"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	NextRefresh time.Time `json:"next_refresh"`
	LastError   string    `json:"last_error"`
	Rotations   uint64    `json:"rotations"`
}

// credential returns the /v1/credentials entry of name.
func (p *sidekeyProc) credential(t *testing.T, name string) credEntry {
	t.Helper()
	code, body, err := p.do(http.MethodGet, p.AdminURL+"/v1/credentials")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/v1/credentials: %d %v: %s", code, err, p.hy.mask(string(body)))
	}
	var list []credEntry
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("/v1/credentials is not a JSON list: %v", err)
	}
	for _, e := range list {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("/v1/credentials has no %s: %s", name, p.hy.mask(string(body)))
	return credEntry{}
}

// ---- secret hygiene ----

// hygiene collects, for one test, the secret values it saw (Vault login
// material, KV values, lease data, tokens) and everything its sidekey
// processes produced: log lines, the answers the test received, files
// under their directories. At the test's end, once the processes have
// stopped, it fails the test for every secret found there.
type hygiene struct {
	mu       sync.Mutex
	secrets  map[string]string // value -> what it is
	procs    []*sidekeyProc
	captures []capture
	written  map[string]bool // files the test wrote itself
	late     []func()        // collect further secrets just before the scan
}

type capture struct {
	where string
	data  []byte
}

var hygienes sync.Map // *testing.T -> *hygiene

// hygieneOf returns t's hygiene, registering its final scan as a cleanup
// on first use (before any process's cleanup, so it runs after them).
func hygieneOf(t *testing.T) *hygiene {
	if h, ok := hygienes.Load(t); ok {
		return h.(*hygiene)
	}
	// t.TempDir registers the removal of the test's directories on its
	// first call: make sure it comes before the scan, which reads them.
	_ = t.TempDir()
	h := &hygiene{secrets: map[string]string{}, written: map[string]bool{}}
	hygienes.Store(t, h)
	t.Cleanup(func() {
		leaks := h.scan()
		hygienes.Delete(t)
		for _, leak := range leaks {
			t.Errorf("secret hygiene: %s", leak)
		}
		if testing.Verbose() {
			h.mu.Lock()
			secrets, procs, captures := len(h.secrets), len(h.procs), len(h.captures)
			h.mu.Unlock()
			t.Logf("secret hygiene: %d secrets checked against %d sidekey processes and %d captured answers",
				secrets, procs, captures)
		}
	})
	return h
}

// minSecretLen is the shortest value the redactor scrubs: shorter values
// are ignored by design, so they are not checked either.
const minSecretLen = 6

// rememberSecret registers values that must never appear in what sidekey
// writes; what names them in a report (never the value).
func rememberSecret(t *testing.T, what string, values ...string) {
	h := hygieneOf(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, v := range values {
		v = strings.TrimSpace(v)
		if len(v) >= minSecretLen {
			if _, ok := h.secrets[v]; !ok {
				h.secrets[v] = what
			}
		}
	}
}

// beforeScan has fn called at the test's end, once its processes have
// stopped and just before the scan, to register secrets seen meanwhile
// (what an engine issued, what an upstream received).
func beforeScan(t *testing.T, fn func()) {
	h := hygieneOf(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.late = append(h.late, fn)
}

func (h *hygiene) addProc(p *sidekeyProc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.procs = append(h.procs, p)
}

func (h *hygiene) capture(where string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.captures = append(h.captures, capture{where: where, data: bytes.Clone(data)})
}

func (h *hygiene) wrote(path string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.written[path] = true
}

// mask replaces every registered secret in s by a placeholder.
func (h *hygiene) mask(s string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for v, what := range h.secrets {
		s = strings.ReplaceAll(s, v, "["+what+"]")
	}
	return s
}

// scan reports every registered secret found in the processes' log lines,
// the captured answers and the files under the processes' directories.
func (h *hygiene) scan() []string {
	h.mu.Lock()
	late := h.late
	h.mu.Unlock()
	for _, fn := range late {
		fn()
	}
	h.mu.Lock()
	secrets := make(map[string]string, len(h.secrets))
	for k, v := range h.secrets {
		secrets[k] = v
	}
	procs := append([]*sidekeyProc(nil), h.procs...)
	captures := append([]capture(nil), h.captures...)
	written := map[string]bool{}
	for k := range h.written {
		written[k] = true
	}
	h.mu.Unlock()

	var leaks []string
	check := func(where, text string) {
		for v, what := range secrets {
			if strings.Contains(text, v) {
				leaks = append(leaks, fmt.Sprintf("%s found in %s", what, where))
			}
		}
	}
	for _, p := range procs {
		for stream, lines := range map[string][]string{"stderr": p.stderr.All(), "stdout": p.stdout.All()} {
			for i, ln := range lines {
				check(fmt.Sprintf("%s line %d of sidekey pid %d", stream, i+1, p.PID), ln)
			}
		}
		_ = filepath.WalkDir(p.Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || written[path] {
				return nil
			}
			if data, err := os.ReadFile(path); err == nil {
				check("file "+path, string(data))
			}
			return nil
		})
	}
	for _, c := range captures {
		check(c.where, string(c.data))
	}
	return leaks
}

// ---- log capture ----
