package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The process hardening of `sidekey run` (SPEC "Process"), seen from
// another process of the same user: sidekey runs as nobody, and so does
// the process that tries to read it.

// nobody is the unprivileged user the tests run sidekey and its would-be
// readers as.
type nobody struct{ uid, gid uint32 }

// requireNobody skips the test unless it can start processes as nobody:
// it must run as root, with runuser installed.
func requireNobody(t *testing.T) nobody {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test runs sidekey and the processes reading it as the user nobody")
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Skip("needs runuser (util-linux) to run the reading processes as nobody")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("needs a user nobody: %v", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("user nobody has uid %q, gid %q", u.Uid, u.Gid)
	}
	return nobody{uint32(uid), uint32(gid)}
}

func (n nobody) attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: n.uid, Gid: n.gid}}
}

// as runs bin as nobody. With SysProcAttr.Credential the process started
// is bin itself, so its pid is the one to inspect (runuser would fork).
func (n nobody) as(bin string) procOption {
	return func(o *procOpts) { o.bin, o.attr = bin, n.attr() }
}

// runDir is newRunDir for a process running as nobody, who cannot enter
// the suite's own 0700 directories: a world-readable directory with a copy
// of the binary, work, tmp and home owned by nobody. It returns the
// directory and the binary. On cleanup, after the process has stopped, any
// file the process left there holding secret is an error.
func (n nobody) runDir(t *testing.T, secret string) (string, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sidekey-e2e-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sidekey")
	t.Cleanup(func() {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || path == bin {
				return nil
			}
			if b, err := os.ReadFile(path); err == nil && secret != "" && bytes.Contains(b, []byte(secret)) {
				t.Errorf("secret hygiene: the secret is in %s", path)
			}
			return nil
		})
		os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"work", "tmp", "home"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, int(n.uid), int(n.gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, bin
}

// writeConfig writes a config file the user nobody can read (0644); it
// holds no secret.
func writeConfig(t *testing.T, dir, yamlText string) string {
	t.Helper()
	path := filepath.Join(dir, "sidekey.yaml")
	markWritten(path)
	if err := os.WriteFile(path, []byte(yamlText), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// start runs `sidekey run` as nobody on yamlText and waits for both
// listeners, like startSidekey.
func (n nobody) start(t *testing.T, secret, yamlText string, opts ...procOption) *proc {
	t.Helper()
	dir, bin := n.runDir(t, secret)
	cfg := writeConfig(t, dir, yamlText)
	p := launch(t, dir, append(opts, n.as(bin)), "run", "-c", cfg)
	p.ConfigPath = cfg
	addrs := map[string]string{}
	_, err := p.waitLog(10*time.Second, func(e map[string]any) bool {
		if e["msg"] == "listening" {
			l, _ := e["listener"].(string)
			a, _ := e["addr"].(string)
			addrs[l] = a
		}
		return addrs["proxy"] != "" && addrs["admin"] != ""
	})
	if err != nil {
		t.Fatalf("sidekey as nobody did not log both listening lines: %v\nlog:\n%s", err, p.tail(40))
	}
	p.ProxyAddr, p.AdminAddr = addrs["proxy"], addrs["admin"]
	p.ProxyURL, p.AdminURL = "http://"+p.ProxyAddr, "http://"+p.AdminAddr
	return p
}

// sleeper is the control: a plain process running as nobody, env
// (KEY=VALUE) its whole environment, which nothing hardens.
func (n nobody) sleeper(t *testing.T, env string) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.Dir = "/"
	cmd.Env = []string{env}
	cmd.SysProcAttr = n.attr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the control process: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// readProbe is an attempt by another process of the user to read a process.
type readProbe struct {
	name string
	cmd  func(pid int) []string
}

// ptraceSeize attaches with PTRACE_SEIZE (which does not stop the
// tracee) and exits, which detaches.
const ptraceSeize = `import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(0x4206, int(sys.argv[1]), 0, 0) != 0:
    sys.exit("ptrace: " + os.strerror(ctypes.get_errno()))
print("attached")`

func readProbes(t *testing.T) []readProbe {
	ps := []readProbe{
		{"read environ", func(pid int) []string { return []string{"cat", fmt.Sprintf("/proc/%d/environ", pid)} }},
		{"open mem", func(pid int) []string {
			return []string{"dd", fmt.Sprintf("if=/proc/%d/mem", pid), "of=/dev/null", "count=0", "status=none"}
		}},
	}
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		ps = append(ps, readProbe{"ptrace", func(pid int) []string {
			return []string{"/usr/bin/python3", "-c", ptraceSeize, strconv.Itoa(pid)}
		}})
	} else {
		t.Log("no /usr/bin/python3: ptrace is not probed (opening mem is the same kernel check)")
	}
	return ps
}

// asNobody runs args as nobody through runuser and returns its output.
func asNobody(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "runuser", append([]string{"-u", "nobody", "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// procStatus returns the value of one /proc/PID/status line, e.g. "Uid".
func procStatus(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s line", pid, key)
	return ""
}

// coreLimit returns the soft and hard "Max core file size" of /proc/PID/limits.
func coreLimit(t *testing.T, pid int) (string, string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(ln, "Max core file size"); ok {
			if f := strings.Fields(rest); len(f) >= 2 {
				return f[0], f[1]
			}
		}
	}
	t.Fatalf("/proc/%d/limits has no core file size:\n%s", pid, b)
	return "", ""
}

// fileOwner is the uid owning path.
func fileOwner(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

func TestHardenKeepsOtherProcessesOfTheUserOut(t *testing.T) {
	n := requireNobody(t)
	secret := secretValue(t)
	up := newUpstream(t, nil)
	p := n.start(t, secret, configYAML(nil,
		[]string{envCred("tok", "E2E_HARDEN_TOKEN")},
		[]route{{name: "r", prefix: "/r/", upstream: up.URL, inject: "{credential: tok, as: bearer}"}}),
		withEnv("E2E_HARDEN_TOKEN="+secret))
	marker := "control-" + randomHex(8)
	control := n.sleeper(t, "E2E_HARDEN_TOKEN="+marker)

	// Both run as nobody, so the readers below are the same user as their
	// target; and sidekey holds the value its environment gave it.
	want := fmt.Sprintf("%d\t%d\t%d\t%d", n.uid, n.uid, n.uid, n.uid)
	for _, pid := range []int{p.PID, control} {
		if got := procStatus(t, pid, "Uid"); got != want {
			t.Fatalf("pid %d runs as Uid %q, want nobody (%s)", pid, got, want)
		}
	}
	if resp, _ := p.get(t, "/r/x"); resp.StatusCode != 200 {
		t.Fatalf("GET through sidekey: %d", resp.StatusCode)
	}
	if got := up.requests()[0].Header.Get("Authorization"); got != "Bearer "+secret {
		t.Fatalf("upstream got Authorization %q, want the env credential", maskSecrets(got))
	}

	for _, pr := range readProbes(t) {
		t.Run(pr.name, func(t *testing.T) {
			out, err := asNobody(pr.cmd(control)...)
			if err != nil {
				t.Fatalf("control: %s on a plain process of nobody failed (%v): %s; the probe proves nothing", pr.name, err, out)
			}
			if pr.name == "read environ" && !strings.Contains(out, marker) {
				t.Fatalf("control: the plain process's environment %q lacks its marker", out)
			}
			out, err = asNobody(pr.cmd(p.PID)...)
			if err == nil {
				t.Fatalf("%s on sidekey succeeded as nobody: %s", pr.name, maskSecrets(out))
			}
			if strings.Contains(out, secret) {
				t.Errorf("%s: the secret reached another process of the user", pr.name)
			}
			if !strings.Contains(out, "Permission denied") && !strings.Contains(out, "Operation not permitted") {
				t.Errorf("%s on sidekey failed otherwise than refused (%v): %s", pr.name, err, maskSecrets(out))
			}
		})
	}

	t.Run("proc owned by root", func(t *testing.T) {
		if got := fileOwner(t, fmt.Sprintf("/proc/%d/environ", control)); got != n.uid {
			t.Errorf("control: /proc/PID/environ of a plain process owned by %d, want nobody", got)
		}
		if got := fileOwner(t, fmt.Sprintf("/proc/%d/environ", p.PID)); got != 0 {
			t.Errorf("sidekey's /proc/PID/environ owned by %d, want root (0)", got)
		}
	})
	t.Run("no core file", func(t *testing.T) {
		if soft, hard := coreLimit(t, p.PID); soft != "0" || hard != "0" {
			t.Errorf("sidekey's Max core file size %s %s, want 0 0", soft, hard)
		}
		// sidekey inherits the control's limits: unless those were 0 0
		// already, the line above is sidekey's doing.
		if soft, hard := coreLimit(t, control); soft == "0" && hard == "0" {
			t.Logf("the system's own core limit is 0 0 already: the check above cannot tell sidekey's part")
		}
	})
}

// vmKB is a /proc/PID/status size line ("1234 kB") in kB.
func vmKB(t *testing.T, pid int, key string) int {
	t.Helper()
	v := procStatus(t, pid, key)
	kb, err := strconv.Atoi(strings.TrimSuffix(v, " kB"))
	if err != nil {
		t.Fatalf("/proc/%d/status %s: %q", pid, key, v)
	}
	return kb
}

func TestHardenMemoryLockAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_IPC_LOCK) for mlockall")
	}
	up := newUpstream(t, nil)
	cfg := func(lock bool) string {
		return configYAML([]string{"memory_lock: " + strconv.FormatBool(lock)}, nil,
			[]route{{name: "r", prefix: "/r/", upstream: up.URL}})
	}
	plain := startSidekey(t, cfg(false))
	locked := startSidekey(t, cfg(true))
	for _, p := range []*proc{plain, locked} {
		if resp, _ := p.get(t, "/r/x"); resp.StatusCode != 200 {
			t.Fatalf("GET through sidekey: %d", resp.StatusCode)
		}
	}
	if got := vmKB(t, plain.PID, "VmLck"); got != 0 {
		t.Errorf("without memory_lock: VmLck %d kB, want 0", got)
	}
	if got := vmKB(t, locked.PID, "VmLck"); got == 0 {
		t.Errorf("with memory_lock: VmLck 0 kB, want every mapping locked")
	}
	// VmLck counts mappings; smaps' Locked counts the resident pages in
	// them. All are locked but the kernel's own [vdso] and [vvar].
	if pss, lck := rollupKB(t, locked.PID, "Pss"), rollupKB(t, locked.PID, "Locked"); lck < pss-64 {
		t.Errorf("with memory_lock: %d kB of %d kB resident locked, want all", lck, pss)
	}
	for name, p := range map[string]*proc{"memory_lock: false": plain, "memory_lock: true ": locked} {
		t.Logf("%s: VmRSS %d kB, RssAnon %d kB, Pss %d kB, Locked %d kB, VmLck %d kB, VmSize %d kB", name,
			vmKB(t, p.PID, "VmRSS"), vmKB(t, p.PID, "RssAnon"), rollupKB(t, p.PID, "Pss"), rollupKB(t, p.PID, "Locked"),
			vmKB(t, p.PID, "VmLck"), vmKB(t, p.PID, "VmSize"))
	}
}

// rollupKB is a /proc/PID/smaps_rollup line in kB.
func rollupKB(t *testing.T, pid int, key string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, key+":"); ok {
			if kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))); err == nil {
				return kb
			}
		}
	}
	t.Fatalf("/proc/%d/smaps_rollup has no %s line:\n%s", pid, key, b)
	return 0
}

func TestHardenMemoryLockRefusedWithoutTheLimit(t *testing.T) {
	n := requireNobody(t)
	tests := []struct {
		ulimit string // RLIMIT_MEMLOCK in KiB, as sh's ulimit -l takes it
		want   []string
	}{
		{"64", []string{"sidekey: memory_lock: mlockall: cannot allocate memory: needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK above the process's whole address space (limit now 64 KiB, address space "}},
		{"0", []string{"sidekey: memory_lock: mlockall: operation not permitted: needs CAP_IPC_LOCK", "(limit now 0 KiB, "}},
	}
	for _, tt := range tests {
		t.Run("ulimit -l "+tt.ulimit, func(t *testing.T) {
			dir, bin := n.runDir(t, "")
			cfg := writeConfig(t, dir, configYAML([]string{"memory_lock: true"}, nil, nil))
			// sh, as nobody, lowers its own limit and becomes sidekey.
			p := launch(t, dir, []procOption{n.as("/bin/sh")},
				"-c", `ulimit -l "$0" && exec "$1" run -c "$2"`, tt.ulimit, bin, cfg)
			p.asserted.Store(true)
			if _, err := p.waitLog(20*time.Second, func(e map[string]any) bool { return e["msg"] == "listening" }); err == nil {
				t.Fatalf("sidekey started with memory_lock and no room to lock; log:\n%s", p.tail(20))
			}
			code, ok := p.wait(10 * time.Second)
			if !ok {
				t.Fatalf("sidekey with memory_lock and no room to lock did not exit; log:\n%s", p.tail(20))
			}
			stderr := strings.Join(p.stderr.All(), "\n")
			if code != 1 {
				t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}
