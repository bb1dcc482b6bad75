package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

// reload re-reads the config file and applies it without dropping a
// connection: routes and credentials swap atomically, unchanged credentials
// keep their holders and values, removed ones stop and are revoked once
// drained, a changed listen address is bound before the old one closes.
// Anything wrong — an invalid file, a port that cannot be bound — refuses
// the whole reload, logs why, and the running configuration keeps serving.
func (d *daemon) reload(ctx context.Context) {
	if d.cfg.File == "-" || d.cfg.File == "" {
		d.log.Warn("reload refused: a configuration read from stdin cannot be reloaded")
		d.ev.reloadRefused(d.cfg.File, errors.New("a configuration read from stdin cannot be reloaded"))
		return
	}
	d.log.WithField("file", d.cfg.File).Info("reloading configuration")
	cfg, err := config.Load(d.cfg.File)
	if err == nil {
		err = reloadable(d.cfg, cfg)
	}
	if err != nil {
		d.refuse(err)
		return
	}
	if err := d.apply(ctx, cfg); err != nil {
		d.refuse(err)
	}
}

// apply switches to cfg, or changes nothing and returns why not.
func (d *daemon) apply(ctx context.Context, cfg *config.Config) error {
	token, err := d.adminToken(ctx, cfg)
	if err != nil {
		return err
	}
	next, added, removed, err := d.set.Reconfigure(cfg.Held(), d.setOptions())
	if err != nil {
		return err
	}
	pln, err := rebind(d.cfg.Listen, cfg.Listen)
	if err != nil {
		return err
	}
	aln, err := rebind(d.cfg.Admin.Listen, cfg.Admin.Listen)
	if err != nil {
		closeNew(pln, d.pln)
		return err
	}
	fwd, err := d.prepareForward(ctx, cfg)
	if err != nil {
		closeNew(pln, d.pln)
		closeNew(aln, d.aln)
		return err
	}
	if err := d.px.Reload(cfg, next); err != nil {
		closeNew(pln, d.pln)
		closeNew(aln, d.aln)
		fwd.abort()
		return err
	}
	if err := d.commitForward(cfg, fwd); err != nil {
		d.log.WithError(err).Error("reload: the forward proxy keeps its previous policy")
	}
	d.ev.use(cfg, next)
	for _, h := range added {
		d.runHolder(h)
	}
	d.set = next
	d.creds.Store(next)
	d.admin.SetToken(token)
	d.admin.SetPolicy(cfg)
	d.admin.SetPprof(cfg.Admin.Pprof)
	if lvl, err := logrus.ParseLevel(cfg.Log.Level); err == nil {
		d.log.SetLevel(lvl)
	}
	d.switchListeners(pln, aln)
	for _, h := range removed {
		d.retire(h, cfg.RevokeOnExit)
	}
	d.cfg = cfg
	d.log.WithFields(logrus.Fields{"routes": len(cfg.Routes), "credentials": len(cfg.Credentials),
		"credentials_added": len(added), "credentials_removed": len(removed)}).Info("configuration reloaded")
	d.ev.reloadApplied(cfg, added, removed)
	return nil
}

// refuse logs why a reload was refused, one line per problem.
func (d *daemon) refuse(err error) {
	if ps := config.Problems(err); len(ps) > 0 {
		for _, p := range ps {
			d.log.WithField("problem", p.Error()).Error("reload refused")
		}
	} else {
		d.log.WithError(err).Error("reload refused")
	}
	d.log.Warn("the running configuration keeps serving")
	d.ev.reloadRefused(d.cfg.File, err)
}

// reloadable refuses changes that cannot be applied in place.
func reloadable(old, new *config.Config) error {
	var errs []error
	if !reflect.DeepEqual(old.Vault, new.Vault) {
		errs = append(errs, errors.New("vault: a changed Vault connection needs a restart"))
	}
	if old.Log.Format != new.Log.Format {
		errs = append(errs, errors.New("log.format: a change needs a restart"))
	}
	if !reflect.DeepEqual(old.TLS, new.TLS) {
		errs = append(errs, errors.New("tls: a change needs a restart"))
	}
	if !reflect.DeepEqual(old.Certificates, new.Certificates) {
		errs = append(errs, errors.New("certificates: a change needs a restart"))
	}
	if old.Limits != new.Limits {
		errs = append(errs, errors.New("limits: a change needs a restart"))
	}
	if old.Telemetry != new.Telemetry {
		errs = append(errs, errors.New("telemetry: a change needs a restart"))
	}
	if old.MemoryLock != new.MemoryLock {
		errs = append(errs, errors.New("memory_lock: a change needs a restart"))
	}
	if err := forwardReloadable(old, new); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// rebind binds addr when it differs from oldAddr; nil when unchanged.
func rebind(oldAddr, addr string) (net.Listener, error) {
	if addr == oldAddr {
		return nil, nil
	}
	ln, err := listen(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

func closeNew(ln, cur net.Listener) {
	if ln != nil && ln != cur {
		ln.Close()
	}
}

// switchListeners serves the new listeners, then closes the old ones: new
// connections go to the new address; connections already open on the old
// one finish their requests.
func (d *daemon) switchListeners(pln, aln net.Listener) {
	if pln != nil {
		old := d.pln
		d.pln = pln
		d.serveOn(d.px.Serve, pln, "proxy")
		d.announce("proxy", pln)
		old.Close()
	}
	if aln != nil {
		old := d.aln
		d.aln = aln
		d.serveOn(d.admin.Serve, aln, "admin")
		d.announce("admin", aln)
		old.Close()
	}
}

// retireDrain bounds how long a removed credential waits for the requests
// that hold it before it is revoked anyway.
const retireDrain = 5 * time.Minute

// retire stops a removed credential's holder and, once no request holds
// its value (or after retireDrain), revokes what it created.
func (d *daemon) retire(h *injector.Holder, revoke bool) {
	r := d.running[h]
	delete(d.running, h)
	d.retiring.Go(func() {
		if r != nil {
			r.cancel()
			<-r.done
		}
		deadline := time.Now().Add(retireDrain)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for h.InFlight() > 0 && time.Now().Before(deadline) {
			<-tick.C
		}
		log := d.log.WithField(telemetry.FieldCredential, h.Name)
		if revoke {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := h.Revoke(ctx); err != nil {
				log.WithError(err).Warn("revoking a removed credential failed")
			}
		}
		log.Info("credential removed")
	})
}
