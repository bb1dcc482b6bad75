package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// environment is the machine and software a report was measured on.
type environment struct {
	Date      string
	Kernel    string
	CPUModel  string
	Cores     int
	GoVersion string
	Sidekey   string            // revision measured
	Versions  map[string]string // tool -> version
}

func describeEnvironment(ctx context.Context, b *bench) environment {
	e := environment{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Versions: map[string]string{}}
	if k, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(k))
	}
	e.CPUModel, e.Cores = cpuInfo()
	e.GoVersion = strings.TrimSpace(output(ctx, "go", "env", "GOVERSION"))
	if e.GoVersion == "" {
		e.GoVersion = runtime.Version()
	}
	if b.o.sidekey != "" {
		e.Sidekey = "binary " + b.o.sidekey
	} else if root, err := moduleRoot(ctx); err == nil {
		e.Sidekey = strings.TrimSpace(output(ctx, "git", "-C", root, "describe", "--always", "--dirty"))
	}
	for tool, args := range map[string][]string{"nginx": {"-v"}, "haproxy": {"-v"}, "caddy": {"version"}, "wrk": {"-v"}} {
		path, err := lookTool(tool)
		if err != nil {
			continue
		}
		if v := versionOf(output(ctx, path, args...)); v != "" {
			e.Versions[tool] = v
		}
	}
	return e
}

// cpuInfo is the first CPU's model name and the number of CPUs.
func cpuInfo() (string, int) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown", 0
	}
	model, n := "unknown", 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			if model == "unknown" {
				model = strings.TrimSpace(v)
			}
		}
	}
	return model, n
}

// output is a command's combined output, whatever its exit status (wrk -v
// exits 1).
func output(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out)
}

var versionRE = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)

// versionOf finds the first dotted version number in a tool's output.
func versionOf(s string) string {
	return versionRE.FindString(s)
}
