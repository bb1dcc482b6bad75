package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sidekey/sidekey/certs"
	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/proxy"
	"github.com/sidekey/sidekey/telemetry"
)

// buildCerts creates the outbound client certificates and the inbound ACME
// manager cfg asks for. Nothing is fetched yet: a certificate that cannot
// be had makes the proxy unready, not a start-up failure.
func (d *daemon) buildCerts(cfg *config.Config) error {
	d.clientCerts = map[string]*certs.ClientCert{}
	var vault certs.Vault
	if d.vault != nil {
		vault = d.vault
	}
	for _, c := range cfg.Certificates {
		cc, err := certs.NewClientCert(c, certs.ClientOptions{Vault: vault, Log: d.log, Secrets: d.red})
		if err != nil {
			return fmt.Errorf("certificate %s: %w", c.Name, err)
		}
		d.clientCerts[c.Name] = cc
	}
	if cfg.TLS == nil {
		return nil
	}
	opts := certs.InboundOptions{Log: d.log, Secrets: d.red, Vault: vault, RenewCheckInterval: cfg.TLS.ACME.RenewInterval}
	if ref := cfg.TLS.ClientCA; ref != nil {
		pool, err := certs.CAPool(*ref)
		if err != nil {
			return fmt.Errorf("tls.client_ca: %w", err)
		}
		opts.ClientCAs = pool
	}
	in, err := certs.NewInbound(cfg.TLS, opts)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	d.inbound = in
	return nil
}

// clientCert finds a client certificate for the proxy's routes.
func (d *daemon) clientCert(name string) proxy.ClientCertificate {
	if cc := d.clientCerts[name]; cc != nil {
		return cc
	}
	return nil
}

// bindTLS binds the inbound TLS listener (and the http-01 challenge
// listener), wrapped so the proxy can tell old-certificate connections.
func (d *daemon) bindTLS(cfg *config.Config) error {
	if d.inbound == nil {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.TLS.Listen)
	if err != nil {
		return fmt.Errorf("tls listen %s: %w", cfg.TLS.Listen, err)
	}
	d.tlsLn = d.inbound.Listener(ln)
	d.announce("tls", ln)
	if cfg.TLS.ACME != nil && cfg.TLS.ACME.Challenge == certs.ChallengeHTTP {
		hln, err := net.Listen("tcp", cfg.TLS.ACME.HTTPListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("acme http_listen %s: %w", cfg.TLS.ACME.HTTPListen, err)
		}
		d.challengeLn, d.challenge = hln, d.inbound.HTTPChallengeServer(hln)
		d.announce("acme-http", hln)
	}
	return nil
}

// startCerts serves the TLS listener and runs the certificate managers.
func (d *daemon) startCerts() {
	for _, cc := range d.clientCerts {
		go d.ev.watchCertificates(d.holdersCtx, cc.Changed, func() []certs.Info { return []certs.Info{cc.Info()} })
		go func() {
			if err := cc.Run(d.holdersCtx); err != nil {
				d.log.WithField("certificate", cc.Name()).WithError(err).Error("client certificate stopped")
			}
		}()
	}
	if d.inbound == nil {
		return
	}
	go d.ev.watchCertificates(d.holdersCtx, d.inbound.Changed, d.inbound.Certificates)
	d.serveOn(d.px.Serve, d.tlsLn, "tls")
	if d.challenge != nil {
		d.servers.Go(func() {
			if err := d.challenge.Serve(d.challengeLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.WithError(err).Error("acme http-01 server stopped")
			}
		})
	}
	go func() {
		if err := d.inbound.Run(d.holdersCtx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.WithError(err).Error("certificate manager stopped")
		}
	}()
}

func (d *daemon) stopChallenge(ctx context.Context) {
	if d.challenge != nil {
		_ = d.challenge.Shutdown(ctx)
	}
}

// certificateInfos lists every certificate for the admin API.
func (d *daemon) certificateInfos() []certs.Info {
	var out []certs.Info
	if d.inbound != nil {
		out = append(out, d.inbound.Certificates()...)
	}
	for _, cc := range d.clientCerts {
		out = append(out, cc.Info())
	}
	if d.fwdCA != nil {
		out = append(out, d.fwdCA.Info())
	}
	return out
}

// certificateProblems names every certificate that keeps the proxy from
// being ready: the inbound one, and client certificates routes use.
func (d *daemon) certificateProblems() []proxy.NotReady {
	var out []proxy.NotReady
	if d.inbound != nil && !d.inbound.Ready() {
		out = append(out, proxy.NotReady{Certificate: "inbound", State: "pending", LastError: errText(d.inbound.Err())})
	}
	if d.fwdCA != nil && !d.fwdCA.Ready() {
		out = append(out, proxy.NotReady{Certificate: forwardCAName, State: "expired", LastError: errText(d.fwdCA.Err())})
	}
	for _, rt := range d.cfg.Routes {
		if rt.UpstreamTLS == nil || rt.UpstreamTLS.ClientCert == "" {
			continue
		}
		if cc := d.clientCerts[rt.UpstreamTLS.ClientCert]; cc != nil && !cc.Ready() {
			out = append(out, proxy.NotReady{Certificate: cc.Name(), State: "pending", LastError: errText(cc.Err())})
		}
	}
	return out
}

// certificateStates feeds sidekey_certificate_expiry_seconds.
func (d *daemon) certificateStates() []telemetry.CertificateState {
	infos := d.certificateInfos()
	out := make([]telemetry.CertificateState, 0, len(infos))
	for _, in := range infos {
		name := in.Name
		out = append(out, telemetry.CertificateState{Name: name, NotAfter: in.NotAfter})
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// certsShutdownGrace bounds the http-01 server's shutdown.
const certsShutdownGrace = 5 * time.Second
