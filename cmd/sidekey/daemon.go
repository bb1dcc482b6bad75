package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/certs"
	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/proxy"
	"github.com/sidekey/sidekey/telemetry"
)

// daemon is one running sidekey: its telemetry, credential holders,
// servers and listeners. Only serve's goroutine calls start, reload and
// stop, so they need no lock of their own.
type daemon struct {
	cfg     *config.Config
	red     *telemetry.Redactor
	out     *telemetry.LockedWriter
	log     *logrus.Logger
	metrics *telemetry.Metrics
	tracing *telemetry.Tracing
	audit   *telemetry.LineSink

	set   *injector.Set
	creds liveSet // the current set, for the admin API and metrics
	px    *proxy.Proxy
	admin *proxy.Admin
	ev    *eventSources // what /v1/events streams

	pln, aln net.Listener
	onListen listening

	fwd      *proxy.Forward   // nil without forward_proxy
	fln      net.Listener     // the forward-proxy listener
	fwdCA    *certs.ForwardCA // nil when nothing is intercepted
	fwdHosts []string         // the route hosts fwdCA was made for

	vault       *injector.VaultClient // nil without a vault section
	inbound     *certs.Inbound        // nil without tls
	clientCerts map[string]*certs.ClientCert
	tlsLn       net.Listener
	challengeLn net.Listener
	challenge   *http.Server

	holdersCtx  context.Context // parent of every holder's, certificate's and Vault's Run
	stopHolders context.CancelFunc
	running     map[*injector.Holder]*holderRun
	servers     sync.WaitGroup
	retiring    sync.WaitGroup // removed credentials draining before revocation
}

// holderRun is one holder's Run, stoppable on its own.
type holderRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// liveSet is the current injector.Set behind an atomic pointer, so the
// admin API and gauges follow reloads.
type liveSet struct{ p atomic.Pointer[injector.Set] }

func (l *liveSet) Store(s *injector.Set)               { l.p.Store(s) }
func (l *liveSet) Holder(name string) *injector.Holder { return l.p.Load().Holder(name) }
func (l *liveSet) Statuses() []injector.Status         { return l.p.Load().Statuses() }

// start runs the holders and both servers.
func (d *daemon) start() {
	d.running = map[*injector.Holder]*holderRun{}
	for _, name := range d.set.Names() {
		d.runHolder(d.set.Holder(name))
	}
	d.serveOn(d.px.Serve, d.pln, "proxy")
	d.serveOn(d.admin.Serve, d.aln, "admin")
	go d.ev.watchExpiry(d.holdersCtx)
	if d.fwd != nil {
		d.serveOn(d.fwd.Serve, d.fln, "forward")
	}
	d.startCerts()
}

func (d *daemon) runHolder(h *injector.Holder) {
	hctx, cancel := context.WithCancel(d.holdersCtx)
	r := &holderRun{cancel: cancel, done: make(chan struct{})}
	d.running[h] = r
	d.metrics.AddCredential(h.Name)
	go func() {
		defer close(r.done)
		if err := h.Run(hctx); err != nil {
			d.log.WithField(telemetry.FieldCredential, h.Name).WithError(err).Error("credential holder stopped")
		}
	}()
}

func (d *daemon) serveOn(serve func(net.Listener) error, ln net.Listener, name string) {
	d.servers.Go(func() {
		if err := serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			d.log.WithField("listener", name).WithError(err).Error("server stopped")
		}
	})
}

// stop drains and tears down in order: stop accepting and let requests
// finish (up to shutdown_timeout), stop the holders, revoke what this
// process created (unless revoke_on_exit is false), flush telemetry.
func (d *daemon) stop() {
	d.log.WithField("timeout", d.cfg.ShutdownTimeout.String()).Info("shutting down: draining requests")
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer cancel()
	// The forward listener stops accepting and drains beside the proxy,
	// which drains the connections it intercepted.
	fwdDone := make(chan error, 1)
	if d.fwd != nil {
		go func() { fwdDone <- d.fwd.Shutdown(ctx) }()
	} else {
		fwdDone <- nil
	}
	if err := errors.Join(d.px.Shutdown(ctx), <-fwdDone); err != nil && !errors.Is(err, net.ErrClosed) {
		d.log.WithError(err).Warn("drain incomplete")
	}
	_ = d.admin.Shutdown(ctx)
	d.stopChallenge(ctx)
	d.servers.Wait()
	for _, r := range d.running {
		r.cancel()
		<-r.done
	}
	d.retiring.Wait()
	if d.cfg.RevokeOnExit {
		if err := d.set.Revoke(ctx); err != nil {
			d.log.WithError(err).Warn("revocation on exit incomplete")
		}
		if d.vault != nil {
			if err := d.vault.Revoke(ctx); err != nil {
				d.log.WithError(err).Warn("vault token revocation on exit failed")
			}
		}
	}
	d.stopHolders()
	if d.fwdCA != nil {
		d.fwdCA.Close()
	}
	d.log.Info("stopped")
	d.closeTelemetry()
}

func (d *daemon) closeTelemetry() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if d.audit != nil {
		d.audit.Close()
	}
	if d.tracing != nil {
		_ = d.tracing.Shutdown(ctx)
	}
	if d.metrics != nil {
		_ = d.metrics.Shutdown(ctx)
	}
}
