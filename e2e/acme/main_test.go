package acme

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binPath is the sidekey binary under test.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// SIDEKEY_E2E_BIN runs the package against an already built binary (a
	// release artefact, say) instead of building ./cmd/sidekey
	// of the repository.
	if prebuilt := os.Getenv("SIDEKEY_E2E_BIN"); prebuilt != "" {
		p, err := filepath.Abs(prebuilt)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e/acme: SIDEKEY_E2E_BIN: %v\n", err)
			return 1
		}
		binPath = p
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "sidekey-e2e-acme-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e/acme: creating the build directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "sidekey")
	build := exec.Command("go", "build", "-o", binPath, "./cmd/sidekey")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/acme: go build ./cmd/sidekey failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
