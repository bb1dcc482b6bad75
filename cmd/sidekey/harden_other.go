//go:build !linux

package main

import (
	"fmt"
	"runtime"
)

// harden changes nothing on this system: PR_SET_DUMPABLE, which Linux
// builds set together with RLIMIT_CORE 0 (harden_linux.go), has no
// equivalent here, so other processes of the same user and core files are
// as the system allows. memory_lock is refused rather than ignored: the
// file asked for a guarantee this build cannot give.
func harden(lock bool) error {
	if lock {
		return fmt.Errorf("memory_lock: not supported on %s", runtime.GOOS)
	}
	return nil
}
