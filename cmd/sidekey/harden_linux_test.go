package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// hardenChildEnv makes the test binary a child that reports its own
// dumpable flag and core limit, hardened or not: harden changes the whole
// process for good, so it never runs in the test process itself.
const hardenChildEnv = "SIDEKEY_TEST_HARDEN_CHILD"

func TestHardenChild(t *testing.T) {
	mode := os.Getenv(hardenChildEnv)
	if mode == "" {
		t.Skip("runs only as the child of TestHardenMakesTheProcessUndumpable")
	}
	if mode == "harden" {
		if err := harden(false); err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(1)
		}
	}
	dumpable, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	var core unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &core); err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("dumpable=%d core=%d/%d\n", dumpable, core.Cur, core.Max)
	os.Exit(0)
}

func TestHardenMakesTheProcessUndumpable(t *testing.T) {
	tests := []struct {
		mode string
		want func(dumpable int, cur, max uint64) bool
		what string
	}{
		{"harden", func(d int, cur, max uint64) bool { return d == 0 && cur == 0 && max == 0 },
			"dumpable=0 core=0/0"},
		// The control: the same child without harden is dumpable, so the
		// check above sees harden's doing, not the test binary's.
		{"control", func(d int, _, _ uint64) bool { return d == 1 }, "dumpable=1"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHardenChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), hardenChildEnv+"="+tt.mode)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			line, _, _ := strings.Cut(string(out), "\n")
			var d int
			var cur, max uint64
			if _, err := fmt.Sscanf(line, "dumpable=%d core=%d/%d", &d, &cur, &max); err != nil {
				t.Fatalf("child said %q: %v", out, err)
			}
			if !tt.want(d, cur, max) {
				t.Errorf("child reports %q, want %s", line, tt.what)
			}
		})
	}
}

func TestLockErrorSaysWhatIsNeeded(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		limit uint64
		vsize string
		want  string
	}{
		{"no limit at all", unix.EPERM, 0, "1277872 kB",
			"memory_lock: mlockall: operation not permitted: needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK above " +
				"the process's whole address space (limit now 0 KiB, address space 1277872 kB)"},
		{"limit too small", unix.ENOMEM, 64 << 10, "1277872 kB",
			"memory_lock: mlockall: cannot allocate memory: needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK above " +
				"the process's whole address space (limit now 64 KiB, address space 1277872 kB)"},
		{"size unknown", unix.ENOMEM, 8 << 20, "",
			"memory_lock: mlockall: cannot allocate memory: needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK above " +
				"the process's whole address space (limit now 8192 KiB)"},
		{"unlimited", unix.ENOMEM, unix.RLIM_INFINITY, "",
			"memory_lock: mlockall: cannot allocate memory: needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK above " +
				"the process's whole address space (limit now unlimited)"},
		{"another failure", unix.EINVAL, 0, "1 kB", "memory_lock: mlockall: invalid argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lockError(tt.err, tt.limit, tt.vsize)
			if err.Error() != tt.want {
				t.Errorf("lockError =\n  %s\nwant\n  %s", err, tt.want)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("lockError does not wrap %v", tt.err)
			}
		})
	}
}

func TestVirtualSizeReadsStatus(t *testing.T) {
	v := virtualSize()
	f := strings.Fields(v)
	if len(f) != 2 || f[1] != "kB" {
		t.Fatalf("virtualSize = %q, want a size in kB", v)
	}
	if n, err := strconv.Atoi(f[0]); err != nil || n <= 0 {
		t.Errorf("virtualSize = %q, want a positive size", v)
	}
}
