package acme

import (
	"github.com/sidekey/sidekey/e2e/internal/linelog"

	"bytes"
	"encoding/json"
	"fmt"
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

// proc is one sidekey process started by a test.
type proc struct {
	ConfigPath string
	PID        int
	Addrs      map[string]string // listener -> address, from the "listening" lines
	AdminURL   string            // http://admin address

	cmd      *exec.Cmd
	stderr   *linelog.Log
	exited   chan struct{} // closed once the process has exited and its output is read
	exitCode int           // valid once exited is closed
	termOnce sync.Once
	asserted atomic.Bool // a failed start was reported already
}

// startSidekey writes yamlText to a config file in dataDir, runs `sidekey
// run -c` on it with HOME, TMPDIR and the working directory set to empty
// directories of their own, and waits (15 s at most) until the process has
// logged a "listening" line for each of listeners. On cleanup it gets
// SIGTERM and must exit 0, after which the three directories must still
// be empty.
func startSidekey(t testing.TB, dataDir, yamlText string, listeners []string, env ...string) *proc {
	t.Helper()
	home, work, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	cfg, err := os.CreateTemp(dataDir, "sidekey-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.WriteString(yamlText); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, "run", "-c", cfg.Name())
	cmd.Dir = work
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"TMPDIR=" + tmp,
	}, env...)
	p := &proc{
		ConfigPath: cfg.Name(),
		Addrs:      map[string]string{},
		cmd:        cmd,
		stderr:     linelog.New(),
		exited:     make(chan struct{}),
	}
	cmd.Stderr = p.stderr
	cmd.Stdout = p.stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sidekey: %v", err)
	}
	p.PID = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		p.stderr.Flush()
		p.exitCode = cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		code, ok := p.terminate(25 * time.Second)
		switch {
		case p.asserted.Load():
		case !ok:
			t.Errorf("sidekey (pid %d) did not exit within 25s of SIGTERM; killed", p.PID)
		case code != 0:
			t.Errorf("sidekey (pid %d) exited %d after SIGTERM, want 0", p.PID, code)
		}
		for what, dir := range map[string]string{"HOME": home, "the working directory": work, "TMPDIR": tmp} {
			if left := filesUnder(t, dir); len(left) > 0 {
				t.Errorf("sidekey (pid %d) wrote to %s: %v", p.PID, what, left)
			}
		}
		if t.Failed() {
			t.Logf("sidekey (pid %d) log tail:\n%s", p.PID, p.tail(60))
		}
	})

	_, err = p.waitLog(15*time.Second, func(e map[string]any) bool {
		if e["msg"] == "listening" {
			l, _ := e["listener"].(string)
			a, _ := e["addr"].(string)
			if l != "" && a != "" {
				p.Addrs[l] = a
			}
		}
		for _, l := range listeners {
			if p.Addrs[l] == "" {
				return false
			}
		}
		return true
	})
	if err != nil {
		p.asserted.Store(true)
		t.Fatalf("sidekey did not log a listening line for each of %v (got %v): %v\nconfig:\n%s\nlog:\n%s",
			listeners, p.Addrs, err, yamlText, p.tail(60))
	}
	if a := p.Addrs["admin"]; a != "" {
		p.AdminURL = "http://" + a
	}
	return p
}

// filesUnder lists everything below dir (dir itself excluded).
func filesUnder(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", dir, err)
	}
	return out
}

// terminate sends SIGTERM once and waits up to timeout for the exit. ok is
// false when the process had to be killed.
func (p *proc) terminate(timeout time.Duration) (code int, ok bool) {
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

// tail returns the last n lines the process logged.
func (p *proc) tail(n int) string {
	lines := p.stderr.All()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
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

// logged returns the JSON log lines whose msg is msg.
func (p *proc) logged(msg string) []map[string]any {
	var out []map[string]any
	for _, ln := range p.stderr.All() {
		var e map[string]any
		if json.Unmarshal([]byte(ln), &e) == nil && e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// admin GETs path on the admin API and returns the status and body.
func (p *proc) admin(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := adminClient.Get(p.AdminURL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, b.Bytes()
}

var adminClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4},
}
