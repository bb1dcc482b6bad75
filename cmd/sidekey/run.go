package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/certs"
	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/proxy"
	"github.com/sidekey/sidekey/telemetry"
)

// cmdRun runs the proxy until ctx ends (SIGTERM, Ctrl-C), then drains.
// SIGHUP reloads the config file.
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
	// The file holds references, never a secret: the first secret is read
	// by serve, after this.
	if err := harden(cfg.MemoryLock); err != nil {
		fmt.Fprintf(stderr, "sidekey: %v\n", err)
		return exitFailed
	}
	setGCPercent(os.Getenv)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := serve(ctx, cfg, stderr, nil, hup); err != nil {
		fmt.Fprintf(stderr, "sidekey: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// gcPercent is the proxy's GOGC unless the environment sets one. What
// sidekey keeps alive is small, mostly connection buffers the collector
// need not scan, while each request with a body leaves a few bytes of
// garbage (fasthttp's drain of the streamed body): at Go's default of 100
// that garbage grows the heap by as much as it holds alive before a cycle
// runs, at 256 connections several MiB of memory touched for nothing. At 25
// a cycle runs every few seconds under load, for a few milliseconds of CPU.
const gcPercent = 25

func setGCPercent(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// listening is told each bound address, for the demo and tests.
type listening func(listener, addr string)

// serve runs everything cfg describes until ctx ends, reloading the file on
// each signal from reload. It returns an error only for a start-up failure;
// a clean drain after ctx ends returns nil.
func serve(ctx context.Context, cfg *config.Config, stderr io.Writer, onListen listening, reload <-chan os.Signal) error {
	d, err := newDaemon(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if err := d.bind(cfg, onListen); err != nil {
		d.stopHolders()
		d.closeTelemetry()
		return err
	}
	if err := d.bindTLS(cfg); err != nil {
		d.pln.Close()
		d.aln.Close()
		if d.fln != nil {
			d.fln.Close()
		}
		d.stopHolders()
		d.closeTelemetry()
		return err
	}
	d.start()
	for {
		select {
		case <-ctx.Done():
			d.stop()
			return nil
		case <-reload:
			d.reload(ctx)
		}
	}
}

// auditFlushEvery is how long an audit line may wait to be written with
// others in one batch (nginx's access_log flush=, Envoy's access log flush
// interval). A busy proxy then makes one write per batch, not per request.
const auditFlushEvery = 100 * time.Millisecond

// auditBatch bounds the audit bytes waiting to be written, about 3,000
// lines. Lines beyond it are dropped (and counted) rather than stalling
// requests behind a slow log sink.
const auditBatch = 1 << 20

// newDaemon builds logging, telemetry, holders, proxy and admin for cfg.
func newDaemon(ctx context.Context, cfg *config.Config, stderr io.Writer) (*daemon, error) {
	d := &daemon{cfg: cfg, red: telemetry.NewRedactor(), out: &telemetry.LockedWriter{W: stderr}}
	var err error
	if d.log, err = telemetry.NewLogger(d.out, cfg.Log.Level, cfg.Log.Format, d.red); err != nil {
		return nil, err
	}
	// Libraries that log through the standard logger (x/net/http2's
	// client, net/http servers without an ErrorLog) write JSON debug lines
	// of ours, scrubbed, not plain text on stderr.
	log.SetFlags(0)
	log.SetOutput(telemetry.DebugWriter{Log: d.log})
	if err := d.startTelemetry(ctx, cfg); err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings() {
		d.log.WithField("problem", w).Warn("configuration")
	}
	// Holders, the Vault client and certificate managers outlive ctx: they
	// must keep serving while requests drain; stop cancels them last.
	d.holdersCtx, d.stopHolders = context.WithCancel(context.WithoutCancel(ctx))
	if err := d.startVault(cfg); err != nil {
		d.closeTelemetry()
		return nil, err
	}
	token, err := d.adminToken(ctx, cfg)
	if err != nil {
		d.closeTelemetry()
		return nil, err
	}
	if d.set, err = injector.NewSet(cfg.Held(), d.setOptions()); err != nil {
		d.closeTelemetry()
		return nil, err
	}
	d.creds.Store(d.set)
	d.ev = newEventSources(cfg, d.set)
	if err := d.buildCerts(cfg); err != nil {
		d.closeTelemetry()
		return nil, err
	}
	opts := proxy.Options{Log: d.log, Audit: d.audit, AuditText: cfg.Log.Format == "text",
		Metrics: d.metrics, Tracing: d.tracing, ClientCert: d.clientCert, CAPool: certs.CAPool, Scrub: d.red,
		Limits: proxy.Limits(cfg.Limits)}
	if d.inbound != nil {
		opts.Retired = d.inbound.Retired
	}
	if d.px, err = proxy.New(cfg, d.set, opts); err != nil {
		d.closeTelemetry()
		return nil, err
	}
	if err := d.buildForward(ctx, cfg); err != nil {
		d.closeTelemetry()
		return nil, err
	}
	d.admin = &proxy.Admin{Credentials: &d.creds, Required: d.px.Required, Scrub: d.red.Bytes, Callers: d.px.Callers,
		Log: d.log, Metrics: d.metrics.Handler(),
		Certificates:        func() any { return d.certificateInfos() },
		CertificateProblems: d.certificateProblems,
		Events:              d.ev.broker, Routes: d.ev.routeList}
	d.metrics.OnCallerRefused(d.ev.callerRefused)
	d.admin.SetPprof(cfg.Admin.Pprof)
	d.metrics.ObserveCertificates(d.certificateStates)
	d.admin.SetToken(token)
	d.admin.SetPolicy(cfg)
	return d, nil
}

// startTelemetry builds metrics, tracing and the audit sink.
func (d *daemon) startTelemetry(ctx context.Context, cfg *config.Config) error {
	var err error
	d.metrics, err = telemetry.NewMetrics(telemetry.MetricsOptions{
		ServiceName: cfg.Telemetry.ServiceName, OTLPEndpoint: cfg.Telemetry.OTLPEndpoint})
	if err != nil {
		return err
	}
	d.tracing, err = telemetry.NewTracing(ctx, telemetry.TracingOptions{
		ServiceName: cfg.Telemetry.ServiceName, OTLPEndpoint: cfg.Telemetry.OTLPEndpoint})
	if err != nil {
		_ = d.metrics.Shutdown(ctx)
		return err
	}
	d.tracing.Scrub = d.red.String
	if d.tracing.Enabled() {
		d.log.WithField("exporter", d.tracing.Endpoint()).Info("tracing on")
	}
	d.metrics.ObserveCredentials(d.credentialStates)
	d.audit = telemetry.NewLineSink(d.out, d.red.Bytes, auditBatch, auditFlushEvery)
	d.metrics.ObserveAuditDropped(d.audit.Dropped)
	return nil
}

func (d *daemon) setOptions() injector.SetOptions {
	return injector.SetOptions{Log: d.log, Secrets: d.red, OnRotate: d.rotated,
		OnRevoke:  func(r injector.Revocation) { d.ev.revoked(r) },
		NewSource: injector.Sources{Vault: d.vault}.New}
}

// rotated is every holder's OnRotate: a metric, an event and a rotation
// span.
func (d *daemon) rotated(name, result string) {
	d.metrics.Rotation(name, result)
	d.ev.rotated(name, result)
	if !d.tracing.Enabled() {
		return
	}
	var version uint64
	var err error
	if h := d.creds.Holder(name); h != nil {
		st := h.Status()
		version = st.Version
		if st.LastError != "" && result != telemetry.ResultSuccess {
			err = errors.New(st.LastError)
		}
	}
	d.tracing.RotationEvent(name, result, version, err)
}

// credentialStates feeds the expiry and age gauges.
func (d *daemon) credentialStates() []telemetry.CredentialState {
	sts := d.creds.Statuses()
	out := make([]telemetry.CredentialState, len(sts))
	for i, st := range sts {
		out[i] = telemetry.CredentialState{Name: st.Name, IssuedAt: st.IssuedAt,
			ExpiresAt: st.ExpiresAt, HasValue: st.Version > 0 && st.State != injector.StateExpired}
	}
	return out
}

// bind binds the app-facing, admin and forward-proxy listeners; a port
// that cannot be bound is a start-up failure.
func (d *daemon) bind(cfg *config.Config, onListen listening) error {
	pln, err := listen(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	aln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		pln.Close()
		return fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
	}
	d.pln, d.aln, d.onListen = pln, aln, onListen
	if err := d.bindForward(cfg); err != nil {
		pln.Close()
		aln.Close()
		return err
	}
	d.announce("proxy", pln)
	d.announce("admin", aln)
	return nil
}

func (d *daemon) announce(name string, ln net.Listener) {
	d.log.WithFields(logrus.Fields{"listener": name, "addr": ln.Addr().String()}).Info("listening")
	if d.onListen != nil {
		d.onListen(name, ln.Addr().String())
	}
}

// startVault builds the Vault client when cfg has a vault section and
// starts its login and token renewal.
func (d *daemon) startVault(cfg *config.Config) error {
	if cfg.Vault == nil {
		return nil
	}
	vc, err := injector.NewVaultClient(cfg.Vault, injector.VaultOptions{Log: d.log, Secrets: d.red})
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	d.vault = vc
	go func() {
		if err := vc.Run(d.holdersCtx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.WithError(err).Error("vault client stopped")
		}
	}()
	return nil
}

// adminToken resolves the admin token reference, if any, and registers it
// with the redactor.
func (d *daemon) adminToken(ctx context.Context, cfg *config.Config) (string, error) {
	if cfg.Admin.Token == nil {
		return "", nil
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := injector.Sources{Vault: d.vault}.Resolve(rctx, *cfg.Admin.Token)
	if err != nil {
		return "", fmt.Errorf("admin.token: %w", err)
	}
	d.red.Add(tok)
	return tok, nil
}
