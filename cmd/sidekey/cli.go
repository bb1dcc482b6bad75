package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

// Exit codes (SPEC "Command line").
const (
	exitOK     = 0
	exitFailed = 1 // bad config, start-up failure
	exitUsage  = 2
)

const usage = `usage: sidekey <command> [flags]

commands:
  run -c FILE        run the proxy (also: sidekey -c FILE; -c - reads stdin)
  validate -c FILE   check a config file; one FILE:LINE: message per problem
  demo               a self-contained demo: token issuer, upstream, proxy
  status [--admin URL] [--json]
                     credentials: source, version, state, expiry, last error
  rotate NAME [--admin URL]
                     refresh one credential now (token: SIDEKEY_ADMIN_TOKEN)
  watch [--admin URL] [--json]
                     follow /v1/events, one line per rotation, failure,
                     expiry, revocation, certificate, reload or refusal
  env -c FILE        print the shell lines that point a process at the forward
                     proxy: eval "$(sidekey env -c FILE)"
  exec -c FILE [--caller NAME] [-v] -- CMD ARGS...
                     run CMD against a forward proxy started for it (ephemeral
                     ports and CA); exit with CMD's status
  scan [-v] PATH...  report credential-shaped strings as FILE:LINE: kind, never
                     the value; exit 1 on a find. Not reported: a line that
                     contains sidekey:allow-secret (for test fixtures)
  scan --staged      the same over what is staged for commit; as a pre-commit
                     hook: exec sidekey scan --staged   (sidekey scan -h)
  version            print version, commit and Go version
`

// run is the whole program behind main: it parses args, runs a subcommand
// and returns the exit code. Tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdin, stderr)
	case "-c", "--c", "-config", "--config":
		return cmdRun(ctx, args, stdin, stderr)
	case "validate":
		return cmdValidate(rest, stdin, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "rotate":
		return cmdRotate(ctx, rest, stdout, stderr)
	case "watch":
		return cmdWatch(ctx, rest, stdout, stderr)
	case "env":
		return cmdEnv(rest, stdin, stdout, stderr)
	case "exec":
		return cmdExec(ctx, rest, stdin, stdout, stderr)
	case "scan":
		return cmdScan(ctx, rest, stdout, stderr)
	case "demo-token":
		return cmdDemoToken(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		return cmdVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "sidekey: unknown command %q\n%s", cmd, usage)
	return exitUsage
}

// configFlag parses the -c flag common to run and validate.
func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet("sidekey "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (- for stdin)")
	fs.StringVar(path, "config", "", "config file (- for stdin)")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "usage: sidekey %s -c FILE\n", name)
		return "", false
	}
	return *path, true
}
