package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/certs"
	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/proxy"
)

// The forward proxy in the daemon: its CA, made at start-up before any
// listener is bound (a CA that cannot be made or written is a start-up
// failure), its listener, and what a reload may change.
//
// A reload keeps the CA as long as it covers the route hosts: apps read
// the CA certificate once (Node at start, the JVM from its trust store,
// requests per session), so a new one would break every app already
// running. A reload that adds a route host is refused when the CA was
// generated (its name constraints name the hosts of start-up: a restart
// of sidekey and the apps is needed); a CA of one's own (ca.cert, ca.key)
// carries no constraints of sidekey's, so it is loaded again for the new
// hosts and its files rewritten. A changed ca section needs a restart; a
// changed listen address is bound before the old one closes.

// forwardCAName names the forward-proxy CA in /v1/certificates, /readyz
// and the certificate metrics.
const forwardCAName = certs.DefaultForwardCAName

// buildForward makes the CA and the forward-proxy listener cfg asks for.
func (d *daemon) buildForward(ctx context.Context, cfg *config.Config) error {
	if cfg.ForwardProxy == nil {
		return nil
	}
	ca, err := d.forwardCA(ctx, cfg)
	if err != nil {
		return err
	}
	d.fwdCA, d.fwdHosts = ca, cfg.RouteHosts()
	if d.fwd, err = d.px.NewForward(cfg, leafIssuer(ca), proxy.ForwardOptions{}); err != nil {
		if ca != nil {
			ca.Close()
		}
		return fmt.Errorf("forward_proxy: %w", err)
	}
	return nil
}

// leafIssuer is ca as the proxy takes it: nil, not a nil pointer in an
// interface, when there is none.
func leafIssuer(ca *certs.ForwardCA) proxy.LeafIssuer {
	if ca == nil {
		return nil
	}
	return ca
}

// forwardCA makes the CA for cfg's route hosts (nil when there are none:
// nothing is intercepted, nothing written), generated in memory or loaded
// from ca.cert and ca.key, and writes cert_out and bundle_out.
func (d *daemon) forwardCA(ctx context.Context, cfg *config.Config) (*certs.ForwardCA, error) {
	hosts := cfg.RouteHosts()
	if len(hosts) == 0 {
		return nil, nil
	}
	fc := cfg.ForwardProxy.CA
	opts := certs.ForwardCAOptions{Name: forwardCAName, Secrets: d.red}
	if !fc.Generated() {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		src := injector.Sources{Vault: d.vault}
		cert, err := src.Resolve(rctx, *fc.Cert)
		if err != nil {
			return nil, fmt.Errorf("forward_proxy.ca.cert: %w", err)
		}
		key, err := src.Resolve(rctx, *fc.Key)
		if err != nil {
			return nil, fmt.Errorf("forward_proxy.ca.key: %w", err)
		}
		opts.CertPEM, opts.KeyPEM = []byte(cert), []byte(key) // the CA registers the key with the redactor
	}
	ca, err := certs.NewForwardCA(hosts, opts)
	if err != nil {
		return nil, fmt.Errorf("forward_proxy.ca: %w", err)
	}
	from, err := ca.WriteFiles(fc.CertOut, fc.BundleOut)
	if err != nil {
		ca.Close()
		return nil, fmt.Errorf("forward_proxy.ca: %w", err)
	}
	f := logrus.Fields{"hosts": strings.Join(hosts, ","), "generated": ca.Generated(),
		"not_after": ca.Certificate().NotAfter.UTC().Format(time.RFC3339)}
	for k, v := range map[string]string{"cert_out": fc.CertOut, "bundle_out": fc.BundleOut} {
		if v != "" {
			f[k] = v
		}
	}
	if fc.BundleOut != "" {
		f["roots_from"] = from
		if from == "" {
			d.log.Warn("forward_proxy.ca.bundle_out: no system roots found; the bundle holds the CA alone")
		}
	}
	d.log.WithFields(f).Info("forward-proxy CA ready")
	return ca, nil
}

// bindForward binds the forward-proxy listener.
func (d *daemon) bindForward(cfg *config.Config) error {
	if d.fwd == nil {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.ForwardProxy.Listen)
	if err != nil {
		return fmt.Errorf("forward_proxy.listen %s: %w", cfg.ForwardProxy.Listen, err)
	}
	d.fln = ln
	d.announce("forward", ln)
	return nil
}

// forwardReloadable refuses the forward-proxy changes a reload cannot make.
func forwardReloadable(old, new *config.Config) error {
	switch {
	case (old.ForwardProxy == nil) != (new.ForwardProxy == nil):
		return errors.New("forward_proxy: adding or removing it needs a restart")
	case old.ForwardProxy == nil:
		return nil
	case !reflect.DeepEqual(old.ForwardProxy.CA, new.ForwardProxy.CA):
		return errors.New("forward_proxy.ca: a change needs a restart")
	}
	return nil
}

// forwardChange is what a reload makes ready for the forward proxy before
// anything is switched: the CA to serve and the listener to move to.
type forwardChange struct {
	ca    *certs.ForwardCA
	newCA bool         // ca was made for this reload
	ln    net.Listener // nil: the address is unchanged
	hosts []string
}

// prepareForward makes the forward proxy's part of a reload ready, or
// says why the reload is refused; nothing running changes.
func (d *daemon) prepareForward(ctx context.Context, cfg *config.Config) (*forwardChange, error) {
	if d.fwd == nil {
		return nil, nil
	}
	ch := &forwardChange{ca: d.fwdCA, hosts: cfg.RouteHosts()}
	if added := notIn(ch.hosts, d.fwdHosts); len(added) > 0 {
		if cfg.ForwardProxy.CA.Generated() {
			return nil, fmt.Errorf("forward_proxy: route host %s is not covered by the name constraints of the CA made at start-up, "+
				"which the apps already trust: a new CA would break them all; restart sidekey (and the apps, to trust its new CA)",
				strings.Join(added, ", "))
		}
		ca, err := d.forwardCA(ctx, cfg)
		if err != nil {
			return nil, err
		}
		ch.ca, ch.newCA = ca, true
	}
	ln, err := rebind(d.cfg.ForwardProxy.Listen, cfg.ForwardProxy.Listen)
	if err != nil {
		ch.abort()
		return nil, fmt.Errorf("forward_proxy.%w", err)
	}
	ch.ln = ln
	return ch, nil
}

// abort undoes what prepareForward made.
func (ch *forwardChange) abort() {
	if ch == nil {
		return
	}
	if ch.newCA && ch.ca != nil {
		ch.ca.Close()
	}
	if ch.ln != nil {
		ch.ln.Close()
	}
}

// commitForward switches the forward proxy to cfg with what prepareForward
// made: the new policy, the CA, the listener.
func (d *daemon) commitForward(cfg *config.Config, ch *forwardChange) error {
	if ch == nil {
		return nil
	}
	if err := d.fwd.Reload(cfg, leafIssuer(ch.ca)); err != nil {
		return fmt.Errorf("forward_proxy: %w", err)
	}
	if ch.newCA {
		old := d.fwdCA
		d.fwdCA = ch.ca
		if old != nil {
			old.Close()
		}
	}
	d.fwdHosts = ch.hosts
	if ch.ln != nil {
		old := d.fln
		d.fln = ch.ln
		d.serveOn(d.fwd.Serve, ch.ln, "forward")
		d.announce("forward", ch.ln)
		old.Close()
	}
	return nil
}

// notIn lists the hosts of a that b does not hold.
func notIn(a, b []string) []string {
	var out []string
	for _, h := range a {
		if !slices.Contains(b, h) {
			out = append(out, h)
		}
	}
	return out
}
