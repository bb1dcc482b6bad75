// Command sidekey is a credential-injecting reverse proxy. See the README and
// SPEC for the command line; this file only wires signals to run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// SIGHUP means "reload" to operators; until reload exists it must not
	// kill the process, which is its default action.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
