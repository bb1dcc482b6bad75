// Command peerbench measures sidekey against its peers: nginx, HAProxy,
// Caddy, a bare fasthttp proxy and a net/http ReverseProxy. Every proxy
// injects the same bearer token into the same requests, in front of the
// same token-checking upstream, and wrk drives each in turn. It prints a
// markdown table per layout and connection count, and writes them with the
// machine's description to -out.
//
// Runs are interleaved: each repeat runs every proxy once per layout and
// connection count, in an order rotated from the previous repeat, so a
// slow minute of the machine spreads over all proxies instead of one.
//
//	go run ./bench/cmd/peerbench -duration 3s -repeats 1 -conns 32
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a run failed its checks, or the harness could not run
	exitUsage  = 2
)

// options are the command line, parsed.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	repeats     int
	conns       []int
	layouts     []string
	peers       []string
	sidekey     string
	sidekeyBase string
	out         string
	command     string
	via         string
	proxyCPU    int
	loadCPU     int
	quota       int
	quotaMethod string
	body        int
	rotateEvery time.Duration
	window      time.Duration
	maxOther    float64
	retries     int
	workdir     string
	keep        bool
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	var conns, layouts, peers string
	fs := flag.NewFlagSet("peerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each run")
	fs.IntVar(&o.repeats, "repeats", 3, "runs per proxy, layout and connection count, interleaved")
	fs.StringVar(&conns, "conns", "1,32,256", "comma-separated wrk connection counts")
	fs.StringVar(&layouts, "layouts", "capped,uncapped", "comma-separated layouts: capped, uncapped")
	fs.StringVar(&peers, "proxies", "all", "comma-separated proxies, or all: "+strings.Join(peerNames(), ","))
	fs.StringVar(&o.sidekey, "sidekey", "", "sidekey binary to measure; empty builds ./cmd/sidekey")
	fs.StringVar(&o.sidekeyBase, "sidekey-base", "", "a second sidekey binary (an earlier commit's build), run as sidekey-base and set beside sidekey as a paired ratio")
	fs.StringVar(&o.out, "out", "bench/RESULTS.md", "markdown file to write; empty writes none")
	fs.StringVar(&o.command, "command", "", "the command line to record in -out (default: this one)")
	fs.StringVar(&o.via, "via", "", "the script that runs peerbench, recorded as the command instead of peerbench itself")
	fs.IntVar(&o.proxyCPU, "proxy-cpu", 0, "core the proxy runs on")
	fs.IntVar(&o.loadCPU, "load-cpu", 1, "core wrk, the upstream and this harness run on")
	fs.IntVar(&o.quota, "quota", 50, "CPU quota of the capped layout, percent of one core")
	fs.StringVar(&o.quotaMethod, "quota-method", "auto", "auto, systemd, cgroup2, cgroup1 or burner")
	fs.IntVar(&o.body, "body", 64, "request body bytes (POST); 0 sends GET without a body")
	fs.DurationVar(&o.rotateEvery, "rotate-every", 10*time.Millisecond, "credential rotation period of the sidekey-rotate proxy")
	fs.DurationVar(&o.window, "window", time.Second, "window length of the sidekey-alternate proxy, whose credential rotates in every other window of a run")
	fs.Float64Var(&o.maxOther, "max-other", 20, "percent of the proxy's core other processes may use during a run before it is made again; 0 = never")
	fs.IntVar(&o.retries, "retries", 2, "how many times a disturbed run is made again")
	fs.StringVar(&o.workdir, "workdir", "", "directory for binaries, configs and logs (default: a new temporary one)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.conns, err = parseInts(conns); err != nil {
		return o, fmt.Errorf("-conns: %w", err)
	}
	if o.layouts, err = parseChoice(layouts, []string{layoutCapped, layoutUncapped}); err != nil {
		return o, fmt.Errorf("-layouts: %w", err)
	}
	if peers == "all" {
		peers = strings.Join(peerNames(), ",")
	}
	if o.peers, err = parseChoice(peers, peerNames()); err != nil {
		return o, fmt.Errorf("-proxies: %w", err)
	}
	return o, o.check()
}

func (o options) check() error {
	switch {
	case o.duration < time.Second:
		return fmt.Errorf("-duration must be at least 1s")
	case o.warmup < 0:
		return fmt.Errorf("-warmup must not be negative")
	case o.repeats < 1:
		return fmt.Errorf("-repeats must be at least 1")
	case o.quota < 1 || o.quota > 100:
		return fmt.Errorf("-quota must be between 1 and 100")
	case o.proxyCPU == o.loadCPU || o.proxyCPU < 0 || o.loadCPU < 0:
		return fmt.Errorf("-proxy-cpu and -load-cpu must be two different cores")
	case o.body < 0:
		return fmt.Errorf("-body must not be negative")
	case o.rotateEvery < time.Millisecond:
		return fmt.Errorf("-rotate-every must be at least 1ms")
	case contains(o.peers, peerSidekeyAlt) && (o.window < 10*o.rotateEvery || o.duration < 3*o.window):
		return fmt.Errorf("-window must hold at least 10 rotations, and -duration at least 3 windows")
	}
	switch o.quotaMethod {
	case "auto", quotaSystemd, quotaCgroup2, quotaCgroup1, quotaBurner:
	default:
		return fmt.Errorf("-quota-method: unknown method %q", o.quotaMethod)
	}
	return nil
}

// parseInts reads "1,32,256" as positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseChoice reads a comma-separated subset of allowed, in allowed's order.
func parseChoice(s string, allowed []string) ([]string, error) {
	want := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !contains(allowed, f) {
			return nil, fmt.Errorf("unknown %q (choose from %s)", f, strings.Join(allowed, ", "))
		}
		want[f] = true
	}
	var out []string
	for _, a := range allowed {
		if want[a] {
			out = append(out, a)
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// run is the whole program: set up, measure every combination, report.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintf(stderr, "peerbench: %v\n", err)
		}
		return exitUsage
	}
	if o.command == "" {
		o.command = recordedCommand(o.via, args)
	}
	b, err := setup(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "peerbench: %v\n", err)
		return exitFailed
	}
	defer b.close()
	results := b.runAll(ctx)
	rep := buildReport(b.env, o, b.layouts, b.peers, b.skipped, results)
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if o.out != "" && len(results) > 0 {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			fmt.Fprintf(stderr, "peerbench: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(stderr, "peerbench: wrote %s\n", o.out)
	}
	if ctx.Err() != nil || rep.failures() > 0 {
		return exitFailed
	}
	return exitOK
}

// shellJoin quotes args for a POSIX shell where they need it.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=,:@%+") == "" {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// recordedCommand is the command line a report names: the script given
// with -via, or go run, and the flags without -via.
func recordedCommand(via string, args []string) string {
	cmd := []string{"go", "run", "./bench/cmd/peerbench"}
	if via != "" {
		cmd = []string{via}
	}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-via" || a == "--via":
			i++
		case strings.HasPrefix(a, "-via=") || strings.HasPrefix(a, "--via="):
		default:
			cmd = append(cmd, a)
		}
	}
	return shellJoin(cmd)
}
