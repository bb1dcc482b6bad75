package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidekey/sidekey/certs"
	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/events"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

// eventSources turns what the daemon's parts report — holders' rotations,
// failures and revocations, expiry, certificate swaps, reloads, caller
// refusals — into events on the broker behind /v1/events. Every method is
// safe for concurrent use; none blocks on a subscriber.
type eventSources struct {
	broker *events.Broker
	// set is the holders' Set, stored before new holders first run, so a
	// reload's first fetch can be described.
	set atomic.Pointer[injector.Set]
	// maxStale is each credential's max_stale, for the expiry watch.
	maxStale atomic.Pointer[map[string]time.Duration]
	routes   atomic.Pointer[[]routeInfo]
	refusals events.Limiter
	wake     chan struct{} // the expiry watch should look again

	mu   sync.Mutex
	last map[string]credVersion // the version each credential last rotated to
}

type credVersion struct {
	version     uint64
	fingerprint string
}

func newEventSources(cfg *config.Config, set *injector.Set) *eventSources {
	ev := &eventSources{broker: &events.Broker{}, wake: make(chan struct{}, 1), last: map[string]credVersion{}}
	ev.use(cfg, set)
	return ev
}

// use points the events at a configuration and its holders (start-up and
// each reload, before the new holders run).
func (ev *eventSources) use(cfg *config.Config, set *injector.Set) {
	ev.set.Store(set)
	stale := map[string]time.Duration{}
	for _, c := range cfg.Credentials {
		stale[c.Name] = c.MaxStale
	}
	ev.maxStale.Store(&stale)
	routes := routeInfos(cfg)
	ev.routes.Store(&routes)
	ev.poke()
}

func (ev *eventSources) poke() {
	select {
	case ev.wake <- struct{}{}:
	default:
	}
}

func (ev *eventSources) status(name string) (injector.Status, bool) {
	if h := ev.set.Load().Holder(name); h != nil {
		return h.Status(), true
	}
	return injector.Status{}, false
}

// rotated is told of every holder's OnRotate: a new version, or a failed
// fetch (the current value, if any, still served).
func (ev *eventSources) rotated(name, result string) {
	st, _ := ev.status(name)
	e := events.Event{Credential: name, Source: st.Source, Version: st.Version, Fingerprint: st.Fingerprint,
		State: st.State, IssuedAt: st.IssuedAt, ExpiresAt: st.ExpiresAt, NextRefresh: st.NextRefresh,
		Rotations: st.Rotations}
	if result == telemetry.ResultSuccess {
		e.Kind = events.CredentialRotated
		ev.mu.Lock()
		prev := ev.last[name]
		ev.last[name] = credVersion{st.Version, st.Fingerprint}
		ev.mu.Unlock()
		e.OldVersion, e.OldFingerprint = prev.version, prev.fingerprint
	} else {
		e.Kind, e.Error = events.CredentialFailed, st.LastError
	}
	ev.broker.Publish(e)
	ev.poke()
}

// revoked is every holder's OnRevoke.
func (ev *eventSources) revoked(r injector.Revocation) {
	e := events.Event{Kind: events.CredentialRevoked, Credential: r.Name, Version: r.Version,
		Fingerprint: r.Fingerprint, Reason: r.Reason, Drained: r.InFlight == 0, InFlight: r.InFlight}
	if r.Err != nil {
		e.Kind, e.Error, e.Drained = events.CredentialRevokeFailed, r.Err.Error(), false
	}
	ev.broker.Publish(e)
}

// callerRefused is told of each refusal the proxy counts; it runs on the
// request path, so it publishes at most one event a second per reason
// and allocates nothing for the others.
func (ev *eventSources) callerRefused(reason string) {
	if n, ok := ev.refusals.Allow(reason); ok {
		ev.broker.Publish(events.Event{Kind: events.CallerRefused, Reason: reason, Count: n})
	}
}

// reloadApplied reports a configuration switched to.
func (ev *eventSources) reloadApplied(cfg *config.Config, added, removed []*injector.Holder) {
	ev.broker.Publish(events.Event{Kind: events.ReloadApplied, File: cfg.File, Routes: len(cfg.Routes),
		Added: holderNames(added), Removed: holderNames(removed)})
}

// reloadRefused reports a refused reload, one problem per entry.
func (ev *eventSources) reloadRefused(file string, err error) {
	ev.broker.Publish(events.Event{Kind: events.ReloadRefused, File: file, Problems: problemTexts(err)})
}

func holderNames(hs []*injector.Holder) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}

// problemTexts lists what refused a reload: each FILE:LINE: message of an
// invalid file, else each joined error.
func problemTexts(err error) []string {
	var out []string
	if ps := config.Problems(err); len(ps) > 0 {
		for _, p := range ps {
			out = append(out, p.Error())
		}
		return out
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, problemTexts(e)...)
		}
		return out
	}
	if err != nil {
		out = append(out, err.Error())
	}
	return out
}

// expiryKey is one deadline of one value: its expires_at (stale false),
// or the end of its max_stale (stale true).
type expiryKey struct {
	name    string
	version uint64
	at      int64
	stale   bool
}

// watchExpiry reports each value passing its expires_at, and again when
// its max_stale runs out, until ctx ends. It sleeps until the next such
// deadline; rotations and reloads wake it to look again.
func (ev *eventSources) watchExpiry(ctx context.Context) {
	reported := map[expiryKey]bool{}
	for {
		next := ev.checkExpiry(time.Now(), reported)
		var timer *time.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			timer = time.NewTimer(time.Until(next))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-ev.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// checkExpiry publishes the deadlines passed by now that were not yet
// reported and returns the next one ahead (zero: none). reported keeps
// only the current values' deadlines.
func (ev *eventSources) checkExpiry(now time.Time, reported map[expiryKey]bool) time.Time {
	stale := *ev.maxStale.Load()
	var next time.Time
	keep := map[expiryKey]bool{}
	for _, st := range ev.set.Load().Statuses() {
		if st.Version == 0 || st.ExpiresAt.IsZero() {
			continue
		}
		deadlines := []expiryKey{{st.Name, st.Version, st.ExpiresAt.UnixNano(), false}}
		if ms := stale[st.Name]; ms > 0 {
			deadlines = append(deadlines, expiryKey{st.Name, st.Version, st.ExpiresAt.Add(ms).UnixNano(), true})
		}
		for _, k := range deadlines {
			at := time.Unix(0, k.at)
			switch {
			case reported[k]:
				keep[k] = true
			case !now.Before(at):
				keep[k] = true
				state := injector.StateExpired
				if !k.stale && stale[st.Name] > 0 {
					state = injector.StateStale
				}
				ev.broker.Publish(events.Event{Kind: events.CredentialExpired, Credential: st.Name,
					Source: st.Source, Version: st.Version, Fingerprint: st.Fingerprint, State: state,
					IssuedAt: st.IssuedAt, ExpiresAt: st.ExpiresAt, NextRefresh: st.NextRefresh, Error: st.LastError})
			case next.IsZero() || at.Before(next):
				next = at
			}
		}
	}
	clear(reported)
	for k := range keep {
		reported[k] = true
	}
	return next
}

// watchCertificates reports each certificate a source starts serving
// under a name: the first as issued, later ones as renewed. It runs until
// ctx ends.
func (ev *eventSources) watchCertificates(ctx context.Context, changed func() <-chan struct{}, infos func() []certs.Info) {
	serials := map[string]string{}
	for {
		ch := changed() // before reading, so no change is missed
		for _, in := range infos() {
			old, seen := serials[in.Name]
			if in.Serial == "" || in.Serial == old {
				continue
			}
			serials[in.Name] = in.Serial
			kind := events.CertificateIssued
			if seen {
				kind = events.CertificateRenewed
			}
			ev.broker.Publish(events.Event{Kind: kind, Certificate: in.Name, CertificateKind: in.Kind,
				Subjects: in.Subjects, Issuer: in.Issuer, Serial: in.Serial, OldSerial: old,
				NotBefore: in.NotBefore, NotAfter: in.NotAfter})
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// routeInfo is one route for /v1/routes: what it matches, where it goes
// and which credential it injects, by name; never a value.
type routeInfo struct {
	Name       string            `json:"name"`
	Match      routeMatch        `json:"match"`
	Upstream   string            `json:"upstream"`
	Strip      bool              `json:"strip_prefix"`
	Credential string            `json:"credential,omitempty"`
	As         string            `json:"as,omitempty"`
	ByCaller   map[string]string `json:"by_caller,omitempty"`
	Callers    []string          `json:"callers"`
	ClientCert string            `json:"client_certificate,omitempty"`
	ScrubBody  bool              `json:"scrub_body"`
}

type routeMatch struct {
	Host       string `json:"host,omitempty"`
	PathPrefix string `json:"path_prefix,omitempty"`
}

func routeInfos(cfg *config.Config) []routeInfo {
	out := make([]routeInfo, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		ri := routeInfo{Name: r.Name, Match: routeMatch{r.Host, r.PathPrefix}, Strip: r.StripPrefix,
			Callers: r.Callers, ScrubBody: r.ScrubBody}
		if ri.Callers == nil {
			ri.Callers = []string{}
		}
		if r.Upstream != nil {
			ri.Upstream = r.Upstream.Redacted()
		}
		if in := r.Inject; in != nil {
			ri.Credential, ri.As, ri.ByCaller = in.Credential, in.As, in.ByCaller
		}
		if r.UpstreamTLS != nil {
			ri.ClientCert = r.UpstreamTLS.ClientCert
		}
		out = append(out, ri)
	}
	return out
}

// routeList is the admin API's Routes.
func (ev *eventSources) routeList() any { return *ev.routes.Load() }
