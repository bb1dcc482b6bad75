package main

import (
	"bytes"
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

// usage is what /proc says about a process and its descendants.
type usage struct {
	ticks   uint64 // utime+stime, in clock ticks, summed over the tree
	nanos   uint64 // the same CPU time in ns, from schedstat: finer than ticks
	hwmKiB  uint64 // VmHWM (peak resident set), summed over the tree
	anonKiB uint64 // RssAnon (private memory resident now), summed over the tree
	procs   int
}

// treeUsage sums CPU time and peak RSS over root and every process
// descending from it. A process that ends between the scan and the read
// is skipped; so is a thread for nanos, which takes its time along.
func treeUsage(root int) (usage, error) {
	pids, err := descendants(root)
	if err != nil {
		return usage{}, err
	}
	var u usage
	for _, pid := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s, err := parseStat(st)
		if err != nil {
			return usage{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		u.ticks += s.utime + s.stime
		if u.nanos, err = addTaskNanos(u.nanos, pid); err != nil {
			return usage{}, err
		}
		if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			u.hwmKiB += statusKiB(status, "VmHWM:")
			u.anonKiB += statusKiB(status, "RssAnon:")
		}
		u.procs++
	}
	if u.procs == 0 {
		return u, fmt.Errorf("process %d is gone", root)
	}
	return u, nil
}

// addTaskNanos adds the CPU time of every thread of pid to total: the
// first field of /proc/PID/task/TID/schedstat.
func addTaskNanos(total uint64, pid int) (uint64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil {
		return total, err
	}
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		ns, err := parseSchedstat(b)
		if err != nil {
			return total, fmt.Errorf("%s: %w", path, err)
		}
		total += ns
	}
	return total, nil
}

// parseSchedstat reads the time spent on the CPU, in ns, from a
// schedstat line: "on-cpu-ns waiting-ns timeslices".
func parseSchedstat(b []byte) (uint64, error) {
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, errors.New("empty schedstat")
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// descendants lists root and all processes below it.
func descendants(root int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if s, err := parseStat(st); err == nil {
			children[s.ppid] = append(children[s.ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

// procStat is the part of /proc/PID/stat the harness reads.
type procStat struct {
	ppid         int
	utime, stime uint64
}

// parseStat reads /proc/PID/stat. The command name, in parentheses, may
// hold spaces and parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, errors.New("too few fields")
	}
	var s procStat
	var err1, err2, err3 error
	s.ppid, err1 = strconv.Atoi(f[1])
	s.utime, err2 = strconv.ParseUint(f[11], 10, 64)
	s.stime, err3 = strconv.ParseUint(f[12], 10, 64)
	return s, errors.Join(err1, err2, err3)
}

// statusKiB reads a "Name:   123 kB" line of /proc/PID/status.
func statusKiB(status []byte, name string) uint64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// clockTicks is USER_HZ, the unit of utime and stime.
func clockTicks() uint64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}

// child is a process the harness started, in its own process group so
// that stopping it reaches everything it started.
type child struct {
	name   string
	cmd    *exec.Cmd
	errLog string
	done   chan struct{}
	err    error
}

// startChild runs argv with stdout and stderr in files under dir.
func startChild(name, dir string, argv, env []string) (*child, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = childEnv(env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(dir, name+".out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	errPath := filepath.Join(dir, name+".log")
	errf, err := os.Create(errPath)
	if err != nil {
		return nil, err
	}
	defer errf.Close()
	cmd.Stdout, cmd.Stderr = out, errf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, errLog: errPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// childEnv is the harness's environment without telemetry exporters, plus
// extra.
func childEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// failure describes an early exit with the end of the child's stderr.
func (c *child) failure() error {
	b, _ := os.ReadFile(c.errLog)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return fmt.Errorf("%s exited (%v): %s", c.name, c.err, strings.Join(lines, " | "))
}

// stop sends SIGTERM to the child's group, and SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

// cpuTimes is one core's line of /proc/stat, in clock ticks.
type cpuTimes struct {
	busy, total uint64
}

// coreTimes reads the /proc/stat line of core n.
func coreTimes(n int) (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	return parseCoreTimes(b, n)
}

// parseCoreTimes: "cpuN user nice system idle iowait irq softirq steal ...";
// busy is everything but idle and iowait, steal included (time the core
// was not ours to use).
func parseCoreTimes(stat []byte, n int) (cpuTimes, error) {
	prefix := "cpu" + strconv.Itoa(n) + " "
	for _, line := range strings.Split(string(stat), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		var t cpuTimes
		for i, f := range strings.Fields(line)[1:] {
			if i >= 8 { // guest time is already counted in user
				break
			}
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return cpuTimes{}, err
			}
			t.total += v
			if i != 3 && i != 4 {
				t.busy += v
			}
		}
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("/proc/stat has no cpu%d", n)
}
