package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/proxy"
	"github.com/sidekey/sidekey/telemetry"
)

// cmdRun runs the proxy until ctx ends (SIGTERM, Ctrl-C), then drains.
func cmdRun(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) int {
	path, ok := configFlag("run", args, stderr)
	if !ok {
		return exitUsage
	}
	cfg, err := loadConfig(path, stdin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	if err := serve(ctx, cfg, stderr, nil); err != nil {
		fmt.Fprintf(stderr, "sidekey: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// listening is told each bound address, for the demo and tests.
type listening func(listener, addr string)

// serve runs everything cfg describes until ctx ends. It returns an error
// only for a start-up failure; a clean drain after ctx ends returns nil.
func serve(ctx context.Context, cfg *config.Config, stderr io.Writer, onListen listening) error {
	if err := supported(cfg); err != nil {
		return err
	}
	red := telemetry.NewRedactor()
	log, err := telemetry.NewLogger(stderr, cfg.Log.Level, cfg.Log.Format, red)
	if err != nil {
		return err
	}
	token, err := adminToken(ctx, cfg, red)
	if err != nil {
		return err
	}
	set, err := injector.NewSet(cfg.Credentials, injector.SetOptions{Log: log, Secrets: red})
	if err != nil {
		return err
	}
	px, err := proxy.New(cfg, set, log)
	if err != nil {
		return err
	}
	admin := &proxy.Admin{Credentials: set, Required: px.Required, Token: token, Scrub: red.Bytes, Log: log}
	pln, aln, err := listen(cfg, log, onListen)
	if err != nil {
		return err
	}
	return runServers(ctx, cfg, log, set, px, admin, pln, aln)
}

// runServers runs the holders and both servers; when ctx ends it stops
// accepting, drains in-flight requests up to shutdown_timeout, then stops the
// holders. Teardown is ordered: requests first, credentials last.
func runServers(ctx context.Context, cfg *config.Config, log *logrus.Logger, set *injector.Set,
	px *proxy.Proxy, admin *proxy.Admin, pln, aln net.Listener) error {
	credCtx, stopCreds := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCreds()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return set.Run(credCtx) })
	g.Go(func() error { return px.Serve(pln) })
	g.Go(func() error { return admin.Serve(aln) })
	g.Go(func() error {
		<-gctx.Done()
		log.WithField("timeout", cfg.ShutdownTimeout.String()).Info("shutting down: draining requests")
		dctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := px.Shutdown(dctx); err != nil {
			log.WithError(err).Warn("drain incomplete")
		}
		_ = admin.Shutdown(dctx)
		stopCreds()
		return nil
	})
	err := g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

// listen binds the app-facing and admin listeners; a port that cannot be
// bound is a start-up failure.
func listen(cfg *config.Config, log logrus.FieldLogger, onListen listening) (net.Listener, net.Listener, error) {
	pln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	aln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		pln.Close()
		return nil, nil, fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
	}
	for name, ln := range map[string]net.Listener{"proxy": pln, "admin": aln} {
		log.WithFields(logrus.Fields{"listener": name, "addr": ln.Addr().String()}).Info("listening")
		if onListen != nil {
			onListen(name, ln.Addr().String())
		}
	}
	return pln, aln, nil
}

// adminToken resolves the admin token reference, if any, and registers it
// with the redactor.
func adminToken(ctx context.Context, cfg *config.Config, red *telemetry.Redactor) (string, error) {
	if cfg.Admin.Token == nil {
		return "", nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tok, err := injector.Resolve(rctx, *cfg.Admin.Token)
	if err != nil {
		return "", fmt.Errorf("admin.token: %w", err)
	}
	red.Add(tok)
	return tok, nil
}

// supported refuses the parts of the configuration this build cannot serve
// yet, rather than starting without them.
func supported(cfg *config.Config) error {
	var errs []error
	if cfg.TLS != nil {
		errs = append(errs, errors.New("tls: inbound TLS is not available in this build"))
	}
	if cfg.ForwardProxy != nil {
		errs = append(errs, errors.New("forward_proxy: not available in this build"))
	}
	if len(cfg.Certificates) > 0 {
		errs = append(errs, errors.New("certificates: not available in this build"))
	}
	for _, rt := range cfg.Routes {
		if rt.UpstreamTLS != nil {
			errs = append(errs, fmt.Errorf("route %s: upstream_tls is not available in this build", rt.Name))
		}
	}
	return errors.Join(errs...)
}
