package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	// binPath is the sidekey binary built by TestMain.
	binPath string
	// rootDir holds the directories sidekey processes run in (run/) and the
	// tests' own data (data/); both are scanned for secrets after the run.
	rootDir string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	bin, err := os.MkdirTemp("", "sidekey-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: creating the build directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(bin)
	// The run and data directories go on tmpfs when there is one: credential
	// files in production sit on tmpfs too (Kubernetes secret volumes), and
	// disk journaling on a busy machine would otherwise add its own latency
	// to file rotation. The binary stays on disk, since tmpfs may be noexec.
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	root, err := os.MkdirTemp(base, "sidekey-e2e-")
	if err != nil {
		root, err = os.MkdirTemp("", "sidekey-e2e-")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: creating the suite directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(root)
	rootDir = root
	for _, sub := range []string{"run", "data"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
	}

	// SIDEKEY_E2E_BIN runs the suite against an already built binary (a
	// release artefact, say) instead of building ./cmd/sidekey.
	if prebuilt := os.Getenv("SIDEKEY_E2E_BIN"); prebuilt != "" {
		if binPath, err = filepath.Abs(prebuilt); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: SIDEKEY_E2E_BIN: %v\n", err)
			return 1
		}
	} else {
		binPath = filepath.Join(bin, "sidekey")
		build := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", binPath, "./cmd/sidekey")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/sidekey failed: %v\n%s", err, out)
			return 1
		}
	}

	code := m.Run()

	leaks := scanForSecrets()
	for _, l := range leaks {
		fmt.Fprintf(os.Stderr, "e2e: secret hygiene: %s\n", l)
	}
	if len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: secret hygiene: %d leak(s) of generated secret values\n", len(leaks))
		code = 1
	} else if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: secret hygiene: %d secrets checked against %d processes, %d captured responses and the files under the run directories\n",
			secretCount(), procCount(), captureCount())
	}
	return code
}
