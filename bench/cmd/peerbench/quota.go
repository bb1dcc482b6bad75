package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Layouts.
const (
	layoutCapped   = "capped"   // proxy on its core under a CPU quota
	layoutUncapped = "uncapped" // proxy alone on its core
)

// Methods of capping the proxy's CPU, most faithful first.
const (
	quotaSystemd = "systemd" // systemd-run --scope -p CPUQuota=
	quotaCgroup2 = "cgroup2" // cpu.max in a cgroup v2 group of our own
	quotaCgroup1 = "cgroup1" // cpu.cfs_quota_us in a cgroup v1 cpu group of our own
	quotaBurner  = "burner"  // a busy loop pinned beside the proxy
)

// quota caps the proxy's CPU in the capped layout.
type quota interface {
	// describe says how, for the report.
	describe() string
	// wrap returns the command that runs argv under the quota.
	wrap(argv []string) []string
	// begin and end bracket one run (the burner runs only in between).
	begin() error
	end()
	// throttled is the number of quota periods in which the proxy was
	// throttled so far; ok is false when the method cannot tell.
	throttled() (n uint64, ok bool)
	close()
}

// layout is where a run places the proxy.
type layout struct {
	name  string
	cpu   int   // the proxy's core
	quota quota // nil: the whole core
}

// wrap pins argv to the layout's core and applies its quota.
func (l *layout) wrap(argv []string) []string {
	pinned := append([]string{"taskset", "-c", strconv.Itoa(l.cpu)}, argv...)
	if l.quota == nil {
		return pinned
	}
	return l.quota.wrap(pinned)
}

func (l *layout) title(loadCPU int) string {
	if l.quota == nil {
		return fmt.Sprintf("proxy alone on core %d; wrk and upstream on core %d", l.cpu, loadCPU)
	}
	return fmt.Sprintf("proxy on core %d capped by %s; wrk and upstream on core %d", l.cpu, l.quota.describe(), loadCPU)
}

// newQuota finds the most faithful working method, or the one asked for.
func newQuota(ctx context.Context, method string, pct, cpu int) (quota, error) {
	try := []string{quotaSystemd, quotaCgroup2, quotaCgroup1, quotaBurner}
	if method != "auto" {
		try = []string{method}
	}
	var errs []error
	for _, m := range try {
		q, err := openQuota(ctx, m, pct, cpu)
		if err == nil {
			return q, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", m, err))
	}
	return nil, errors.Join(errs...)
}

func openQuota(ctx context.Context, method string, pct, cpu int) (quota, error) {
	switch method {
	case quotaSystemd:
		return openSystemd(ctx, pct)
	case quotaCgroup2:
		return openCgroup(cgroupV2, pct)
	case quotaCgroup1:
		return openCgroup(cgroupV1, pct)
	default:
		return &burner{cpu: cpu, pct: pct}, nil
	}
}

// systemdQuota runs the proxy in a transient scope with CPUQuota.
type systemdQuota struct{ pct int }

func openSystemd(ctx context.Context, pct int) (quota, error) {
	if _, err := exec.LookPath("systemd-run"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q := &systemdQuota{pct: pct}
	argv := q.wrap([]string{"true"})
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, firstLine(string(out)))
	}
	return q, nil
}

func (q *systemdQuota) describe() string {
	return fmt.Sprintf("systemd-run --scope -p CPUQuota=%d%%", q.pct)
}

func (q *systemdQuota) wrap(argv []string) []string {
	return append([]string{"systemd-run", "--scope", "--quiet", "--collect", "-p", fmt.Sprintf("CPUQuota=%d%%", q.pct)}, argv...)
}

func (q *systemdQuota) begin() error              { return nil }
func (q *systemdQuota) end()                      {}
func (q *systemdQuota) throttled() (uint64, bool) { return 0, false }
func (q *systemdQuota) close()                    {}

// cgroupVersion selects the files of a cgroup hierarchy.
type cgroupVersion int

const (
	cgroupV1 cgroupVersion = 1
	cgroupV2 cgroupVersion = 2
)

// cgroupQuota is a cgroup of our own with a CPU bandwidth limit; the
// proxy's wrapper shell moves itself into it before exec.
type cgroupQuota struct {
	version cgroupVersion
	dir     string
	pct     int
}

const quotaPeriodUS = 100000

func openCgroup(v cgroupVersion, pct int) (quota, error) {
	bases, err := cgroupBases(v)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, base := range bases {
		q, err := makeCgroup(v, base, pct)
		if err == nil {
			return q, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// makeCgroup creates a group under base and sets its CPU bandwidth.
func makeCgroup(v cgroupVersion, base string, pct int) (*cgroupQuota, error) {
	if v == cgroupV2 {
		ctl, err := os.ReadFile(filepath.Join(base, "cgroup.controllers"))
		if err != nil {
			return nil, err
		}
		if !contains(strings.Fields(string(ctl)), "cpu") {
			return nil, fmt.Errorf("%s: no cpu controller", base)
		}
		_ = os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte("+cpu"), 0)
	}
	dir := filepath.Join(base, fmt.Sprintf("peerbench-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	q := &cgroupQuota{version: v, dir: dir, pct: pct}
	if err := q.set(); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

func (q *cgroupQuota) set() error {
	quotaUS := quotaPeriodUS * q.pct / 100
	if q.version == cgroupV2 {
		return os.WriteFile(filepath.Join(q.dir, "cpu.max"), fmt.Appendf(nil, "%d %d", quotaUS, quotaPeriodUS), 0)
	}
	if err := os.WriteFile(filepath.Join(q.dir, "cpu.cfs_period_us"), fmt.Appendf(nil, "%d", quotaPeriodUS), 0); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(q.dir, "cpu.cfs_quota_us"), fmt.Appendf(nil, "%d", quotaUS), 0)
}

func (q *cgroupQuota) describe() string {
	if q.version == cgroupV2 {
		return fmt.Sprintf("a cgroup v2 cpu.max quota of %d%% of one core", q.pct)
	}
	return fmt.Sprintf("a cgroup v1 cpu.cfs_quota_us quota of %d%% of one core", q.pct)
}

// wrap: the shell joins the group, then execs argv, which keeps its PID.
func (q *cgroupQuota) wrap(argv []string) []string {
	return append([]string{"sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(q.dir, "cgroup.procs")}, argv...)
}

func (q *cgroupQuota) begin() error { return nil }
func (q *cgroupQuota) end()         {}

func (q *cgroupQuota) throttled() (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(q.dir, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	return statField(string(b), "nr_throttled")
}

// close removes the group; it must be empty by then, and a leftover
// process keeps it (the harness stops every proxy before).
func (q *cgroupQuota) close() {
	for i := 0; i < 50; i++ {
		if err := os.Remove(q.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cgroupBases lists where a group of ours may go: under the cgroup this
// process is in, then at the hierarchy's root.
func cgroupBases(v cgroupVersion) ([]string, error) {
	mount, err := cgroupMount(v)
	if err != nil {
		return nil, err
	}
	own, err := ownCgroup(v)
	if err != nil {
		return nil, err
	}
	bases := []string{filepath.Join(mount, own)}
	if own != "/" {
		bases = append(bases, mount)
	}
	return bases, nil
}

// cgroupMount finds the mount point of the v2 hierarchy, or of the v1
// hierarchy that has the cpu controller.
func cgroupMount(v cgroupVersion) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if mnt, ok := matchCgroupMount(sc.Text(), v); ok {
			return mnt, nil
		}
	}
	return "", fmt.Errorf("no cgroup v%d hierarchy with the cpu controller is mounted", v)
}

// matchCgroupMount reads one mountinfo line: "... mountpoint ... - fstype source superopts".
func matchCgroupMount(line string, v cgroupVersion) (string, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return "", false
	}
	pf, qf := strings.Fields(pre), strings.Fields(post)
	if len(pf) < 5 || len(qf) < 3 {
		return "", false
	}
	if v == cgroupV2 {
		return pf[4], qf[0] == "cgroup2"
	}
	return pf[4], qf[0] == "cgroup" && contains(strings.Split(qf[2], ","), "cpu")
}

// ownCgroup is this process's path in the hierarchy, from /proc/self/cgroup.
func ownCgroup(v cgroupVersion) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (v == cgroupV2 && parts[0] == "0" && parts[1] == "") ||
			(v == cgroupV1 && contains(strings.Split(parts[1], ","), "cpu")) {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("not in a cgroup v%d cpu hierarchy", v)
}

// statField reads "name value" from a cgroup cpu.stat.
func statField(stat, name string) (uint64, bool) {
	for _, line := range strings.Split(stat, "\n") {
		k, val, ok := strings.Cut(line, " ")
		if ok && k == name {
			n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// burner approximates a quota when the kernel's cannot be used: a busy
// loop pinned to the proxy's core takes about half of it whenever the
// proxy wants the core too. It is cruder (the share depends on the
// scheduler, not a fixed budget) and only models 50%.
type burner struct {
	cpu, pct int
	cmd      *exec.Cmd
}

func (q *burner) describe() string {
	return fmt.Sprintf("a co-pinned busy loop (about half of core %d)", q.cpu)
}

func (q *burner) wrap(argv []string) []string { return argv }

func (q *burner) begin() error {
	q.cmd = exec.Command("taskset", "-c", strconv.Itoa(q.cpu), "sh", "-c", "while :; do :; done")
	q.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return q.cmd.Start()
}

func (q *burner) end() {
	if q.cmd == nil || q.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-q.cmd.Process.Pid, syscall.SIGKILL)
	_ = q.cmd.Wait()
	q.cmd = nil
}

func (q *burner) throttled() (uint64, bool) { return 0, false }
func (q *burner) close()                    { q.end() }

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
