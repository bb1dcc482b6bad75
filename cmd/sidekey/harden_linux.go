//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// harden makes the process undumpable: no core file (RLIMIT_CORE 0, soft
// and hard, so nothing in the process can raise it again), and
// PR_SET_DUMPABLE 0, which makes /proc/PID/* owned by root and refuses
// other processes of the same user /proc/PID/environ, /proc/PID/mem and
// ptrace. Only a process with CAP_SYS_PTRACE still reads them. With lock it
// also locks the process's memory (mlockall), so no secret reaches swap.
//
// It must run before any secret is read. Both flags are the whole
// process's, all threads, and hold until exit (sidekey never changes its
// credentials, which would reset the dumpable flag). A child that execs (an
// exec credential source) is a new process: dumpable again, but with
// RLIMIT_CORE 0. Any error is a start-up failure: sidekey does not run with
// less protection than the file asks for.
//
// MCL_ONFAULT locks each page when it is first touched instead of faulting
// in every mapping at once. A page holding a secret has been touched, so
// the protection is the same; but Go maps far more than it touches (the
// heap arena index, arenas, thread stacks): without it memory_lock took an
// idle proxy's resident memory from 18 to 97 MiB, 150 MiB in a cgo build,
// whose threads' 8 MiB stacks are then resident too. It needs Linux 4.4.
func harden(lock bool) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the process undumpable (prctl PR_SET_DUMPABLE): %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("setting RLIMIT_CORE to 0: %w", err)
	}
	if !lock {
		return nil
	}
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		var lim unix.Rlimit
		_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim)
		return lockError(err, lim.Cur, virtualSize())
	}
	return nil
}

// lockError explains a failed mlockall. EPERM means no CAP_IPC_LOCK and an
// RLIMIT_MEMLOCK of 0; ENOMEM means the limit is below the process's whole
// address space, which mlockall counts in full, reserved ranges included.
// vsize is that size as /proc/self/status shows it, or "".
func lockError(err error, limit uint64, vsize string) error {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOMEM) {
		return fmt.Errorf("memory_lock: mlockall: %w", err)
	}
	space := ""
	if vsize != "" {
		space = ", address space " + vsize
	}
	return fmt.Errorf("memory_lock: mlockall: %w: needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK above "+
		"the process's whole address space (limit now %s%s)", err, limitString(limit), space)
}

// limitString renders an rlimit in bytes the way ulimit -l reads it.
func limitString(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return fmt.Sprintf("%d KiB", v/1024)
}

// virtualSize is the VmSize line of /proc/self/status ("1234567 kB"), or
// "" when it cannot be read.
func virtualSize() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, "VmSize:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
