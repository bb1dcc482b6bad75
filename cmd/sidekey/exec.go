package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// cmdExec runs a command against a forward proxy started for it: the
// config's routes and credentials, every listener on an ephemeral loopback
// port, a CA generated for the run whose two files live in a private
// temporary directory, removed at exit. The command gets the variables of
// sidekey env; SIGINT and SIGTERM are passed on to it; when it ends the
// proxy drains and stops, and sidekey exits with the command's status.
func cmdExec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sidekey exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (- for stdin)")
	fs.StringVar(path, "config", "", "config file (- for stdin)")
	callerName := fs.String("caller", "", "name this caller in the command's proxy URLs (its token read as the config says)")
	verbose := fs.Bool("v", false, "log as the config says (default: warnings and errors only)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *path == "" || fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: sidekey exec -c FILE [--caller NAME] [-v] -- CMD ARGS...")
		return exitUsage
	}
	cfg, err := loadConfig(*path, stdin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	userinfo, err := execCaller(ctx, cfg, *callerName)
	if err != nil {
		fmt.Fprintf(stderr, "sidekey exec: %v\n", err)
		return exitFailed
	}
	if err := harden(cfg.MemoryLock); err != nil {
		fmt.Fprintf(stderr, "sidekey exec: %v\n", err)
		return exitFailed
	}
	dir, err := os.MkdirTemp("", "sidekey-exec-")
	if err != nil {
		fmt.Fprintf(stderr, "sidekey exec: %v\n", err)
		return exitFailed
	}
	defer os.RemoveAll(dir)
	run := execConfig(cfg, dir, *verbose)
	px, err := startExecProxy(ctx, run, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sidekey exec: %v\n", err)
		return exitFailed
	}
	defer px.stop()
	if len(cfg.Callers) > 0 && userinfo == "" && !cfg.AllowAnonymous {
		fmt.Fprintln(stderr, "sidekey exec: callers are set and no --caller is given: the command's requests will be refused (407)")
	}
	env := os.Environ()
	for _, v := range forwardEnv(proxyURL(px.forward, userinfo), run.ForwardProxy.CA) {
		env = append(env, v.name+"="+v.value)
	}
	return runChild(fs.Args(), env, stdin, stdout, stderr)
}

// execConfig is cfg as sidekey exec serves it: every listener on an
// ephemeral loopback port, no inbound TLS, a forward proxy with a CA
// generated for the run whose files go to dir, quiet logs unless verbose.
func execConfig(cfg *config.Config, dir string, verbose bool) *config.Config {
	run := *cfg
	run.Listen = "127.0.0.1:0"
	run.Admin.Listen = "127.0.0.1:0"
	run.TLS = nil
	fp := config.ForwardProxy{}
	if cfg.ForwardProxy != nil {
		fp = *cfg.ForwardProxy
	}
	fp.Listen = "127.0.0.1:0"
	fp.CA = config.ForwardCA{CertOut: filepath.Join(dir, "ca.pem"), BundleOut: filepath.Join(dir, "ca-bundle.pem")}
	run.ForwardProxy = &fp
	if !verbose && run.Log.Level != "error" {
		run.Log.Level = "warn"
	}
	return &run
}

// execCaller returns "name:token", escaped for a URL, for the caller
// named (its token read from the reference the config gives it); "" for
// no name.
func execCaller(ctx context.Context, cfg *config.Config, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	for _, c := range cfg.Callers {
		if c.Name != name {
			continue
		}
		if c.Token == nil {
			return "", fmt.Errorf("caller %s has no token: only a token names a caller in a proxy URL", name)
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		tok, err := injector.Sources{}.Resolve(rctx, *c.Token)
		if err != nil {
			return "", fmt.Errorf("caller %s: %w", name, err)
		}
		return url.UserPassword(name, tok).String(), nil
	}
	return "", fmt.Errorf("no caller is named %q", name)
}

// execProxy is the proxy sidekey exec runs for its command.
type execProxy struct {
	forward, admin string // addresses
	cancel         context.CancelFunc
	done           chan error
	once           sync.Once
}

// readyWait bounds how long the command waits for every credential.
const readyWait = 30 * time.Second

// startExecProxy serves cfg until stop, and returns once it listens and is
// ready (or readyWait has passed: the command then runs, and its requests
// may be answered 503 until the credentials arrive).
func startExecProxy(ctx context.Context, cfg *config.Config, stderr io.Writer) (*execProxy, error) {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	px := &execProxy{cancel: cancel, done: make(chan error, 1)}
	var mu sync.Mutex
	addrs := map[string]string{}
	listening := make(chan struct{})
	var once sync.Once
	onListen := func(name, addr string) {
		mu.Lock()
		defer mu.Unlock()
		addrs[name] = addr
		if addrs["forward"] != "" && addrs["admin"] != "" && addrs["proxy"] != "" {
			once.Do(func() {
				px.forward, px.admin = addrs["forward"], addrs["admin"]
				close(listening)
			})
		}
	}
	go func() { px.done <- serve(pctx, cfg, stderr, onListen, nil) }()
	select {
	case err := <-px.done:
		cancel()
		if err == nil {
			err = errors.New("the proxy stopped before it listened")
		}
		return nil, err
	case <-listening:
	}
	if err := waitReady(ctx, "http://"+px.admin+"/readyz", readyWait); err != nil {
		fmt.Fprintf(stderr, "sidekey exec: not ready after %v, running the command anyway: %v\n", readyWait, err)
	}
	return px, nil
}

// stop drains and stops the proxy, once.
func (px *execProxy) stop() {
	px.once.Do(func() {
		px.cancel()
		<-px.done
	})
}

// waitReady polls a /readyz URL until it answers 200.
func waitReady(ctx context.Context, u string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := errors.New("no answer yet")
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if resp, err := client.Do(req); err != nil {
			last = err
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s", resp.Status, b)
		}
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		}
	}
}

// runChild runs argv with env and the given standard streams, passing
// SIGINT and SIGTERM on to it, and returns its exit status: its code, or
// 128 plus the signal that ended it, as shells report it; 127 when it
// cannot be started.
func runChild(argv, env []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, stdin, stdout, stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "sidekey exec: %v\n", err)
		return 127
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintf(stderr, "sidekey exec: %v\n", err)
	return exitFailed
}
