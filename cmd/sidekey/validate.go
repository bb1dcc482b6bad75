package main

import (
	"fmt"
	"io"

	"github.com/sidekey/sidekey/config"
)

// cmdValidate parses and checks a config file: exit 0, or 1 with one
// FILE:LINE: message line per problem. It never prints a secret value.
func cmdValidate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	path, ok := configFlag("validate", args, stderr)
	if !ok {
		return exitUsage
	}
	cfg, err := loadConfig(path, stdin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning: "+w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return exitOK
}

// loadConfig reads path, or stdin for "-".
func loadConfig(path string, stdin io.Reader) (*config.Config, error) {
	if path != "-" {
		return config.Load(path)
	}
	data, err := io.ReadAll(io.LimitReader(stdin, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	return config.Parse("-", data)
}
