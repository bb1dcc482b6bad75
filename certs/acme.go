package certs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/config"
)

// Challenge types of tls.acme.challenge.
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
)

// Certmagic events the Inbound listens to.
const (
	eventObtained = "cert_obtained"       // issued or renewed and stored; not yet in the cache
	eventCached   = "cached_managed_cert" // loaded into the cache
	eventFailed   = "cert_failed"         // an attempt failed; certmagic retries
)

const (
	// swapPoll and swapWait bound the wait, after certmagic reports a
	// certificate obtained, for it to replace the old one in the cache.
	swapPoll = 20 * time.Millisecond
	swapWait = 2 * time.Minute
	// ticketKeyRotation is how often session-ticket keys are replaced;
	// tickets stay good for up to two periods.
	ticketKeyRotation = 24 * time.Hour
	// challengeReadHeaderTimeout bounds a request on the http-01 listener.
	challengeReadHeaderTimeout = 10 * time.Second
)

// InboundOptions are the optional parts of an Inbound. Their zero values
// are useful.
type InboundOptions struct {
	// Log receives certmagic's lines (as logrus entries with
	// component=certmagic) and the Inbound's own; nil discards them.
	Log logrus.FieldLogger
	// Secrets is told of every private key (ACME account and certificate
	// keys) while it is stored, so the log redactor can scrub it.
	Secrets SecretSet
	// Vault serves storage "vault:PATH"; nil refuses that storage.
	Vault Vault
	// RenewCheckInterval is how often certmagic looks for certificates to
	// renew; zero is certmagic's default (10 minutes).
	RenewCheckInterval time.Duration
	// ClientCAs, when set, verify client certificates: a client may present
	// one (a caller's identity) and must then present one these CAs
	// issued; a client without one still connects (VerifyClientCertIfGiven),
	// so ACME validation and callers with tokens keep working.
	ClientCAs *x509.CertPool
	// RenewalWindowRatio is the share of a certificate's lifetime, at its
	// end, in which it is renewed; zero is certmagic's default (1/3). The
	// CA's ACME Renewal Info (ARI) may ask for an earlier renewal.
	RenewalWindowRatio float64
}

// Inbound obtains and renews the inbound listener's certificates with ACME
// (certmagic) and serves them to TLS handshakes, hot-swapped: a renewed
// certificate is served to the next handshake, and the connections made
// with an older one can be found (Retired) and closed between requests.
//
// Nothing is written to disk: the ACME account, certificates and keys live
// in memory (storage "memory") or in Vault (storage "vault:PATH"), and
// certmagic's logs go to the given logrus logger.
//
// Build it with NewInbound; Listener, HTTPChallengeServer and TLSConfig
// before Start; every other method is safe for concurrent use at any time.
type Inbound struct {
	domains   []string
	challenge string
	log       logrus.FieldLogger
	cache     *certmagic.Cache
	magic     *certmagic.Config
	issuer    *certmagic.ACMEIssuer
	tlsConf   *tls.Config
	tlsPort   int // for the http-01 listener's redirect to HTTPS

	started atomic.Bool
	done    chan struct{} // closed once Start's work has stopped
	kick    chan struct{} // a certificate was obtained: watch for the swap

	snap      atomic.Pointer[snapshot]
	refreshMu sync.Mutex // one refresh at a time

	mu      sync.Mutex // guards lastErr, changed and ticket
	lastErr map[string]string
	changed chan struct{}
	ticket  [32]byte // the current session-ticket key
}

// snapshot is the set of certificates certmagic serves, as last seen; it
// is immutable once stored.
type snapshot struct {
	gen     uint64
	serials map[string]bool              // every cached certificate for the domains
	leaf    map[string]*x509.Certificate // domain -> the newest one
}

// NewInbound builds the certificate manager for the tls section of a
// configuration. It checks the configuration and reads ca_roots, but does
// not contact the CA (or Vault): Start does.
//
// Choosing ACME means agreeing to the CA's subscriber agreement.
func NewInbound(cfg *config.TLS, opts InboundOptions) (*Inbound, error) {
	if cfg == nil || cfg.ACME == nil || len(cfg.ACME.Domains) == 0 {
		return nil, errors.New("tls: acme with at least one domain is required")
	}
	a := cfg.ACME
	in := &Inbound{
		challenge: a.Challenge,
		log:       opts.Log,
		done:      make(chan struct{}),
		kick:      make(chan struct{}, 1),
		lastErr:   map[string]string{},
		changed:   make(chan struct{}),
	}
	if in.log == nil {
		in.log = discardLogger()
	}
	for _, d := range a.Domains {
		in.domains = append(in.domains, strings.ToLower(strings.TrimSuffix(d, ".")))
	}
	in.snap.Store(&snapshot{serials: map[string]bool{}, leaf: map[string]*x509.Certificate{}})

	iss, err := in.issuerTemplate(cfg, a)
	if err != nil {
		return nil, err
	}
	storage, err := newStorage(a.Storage, opts.Vault)
	if err != nil {
		return nil, err
	}
	in.build(storage, iss, opts)
	return in, nil
}

// issuerTemplate checks the ACME settings and returns the issuer's
// template: directory, e-mail, trusted roots, challenge and the address it
// is answered on.
func (in *Inbound) issuerTemplate(cfg *config.TLS, a *config.ACME) (certmagic.ACMEIssuer, error) {
	iss := certmagic.ACMEIssuer{CA: a.Directory, Email: a.Email, Agreed: true}
	if a.CARoots != nil {
		pool, err := CAPool(*a.CARoots)
		if err != nil {
			return iss, fmt.Errorf("tls.acme.ca_roots: %w", err)
		}
		iss.TrustedRoots = pool
	}
	tlsHost, tlsPort, err := splitListen(cfg.Listen)
	if err != nil {
		return iss, fmt.Errorf("tls.listen: %w", err)
	}
	in.tlsPort = tlsPort
	switch in.challenge {
	case ChallengeTLSALPN, "":
		in.challenge = ChallengeTLSALPN
		iss.DisableHTTPChallenge = true
		iss.ListenHost, iss.AltTLSALPNPort = tlsHost, tlsPort
	case ChallengeHTTP:
		host, port, err := splitListen(a.HTTPListen)
		if err != nil {
			return iss, fmt.Errorf("tls.acme.http_listen: %w", err)
		}
		iss.DisableTLSALPNChallenge = true
		iss.ListenHost, iss.AltHTTPPort = host, port
	default:
		return iss, fmt.Errorf("tls.acme.challenge: %q is not tls-alpn-01 or http-01", in.challenge)
	}
	return iss, nil
}

// newStorage builds the storage named by tls.acme.storage.
func newStorage(spec string, v Vault) (certmagic.Storage, error) {
	if spec == "" || spec == "memory" {
		return &MemoryStorage{}, nil
	}
	if p, ok := strings.CutPrefix(spec, "vault:"); ok {
		s, err := NewVaultStorage(v, p)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.storage: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("tls.acme.storage: %q is not memory or vault:PATH", spec)
}

// build makes the certmagic cache, config and issuer, and the TLS config.
// Nothing in them falls back to certmagic's package defaults that touch
// the disk or stderr: storage and loggers are always set.
func (in *Inbound) build(storage certmagic.Storage, iss certmagic.ACMEIssuer, opts InboundOptions) {
	zl := zapLogger(opts.Log)
	in.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return in.magic, nil },
		RenewCheckInterval: opts.RenewCheckInterval,
		Logger:             zl,
	})
	in.magic = certmagic.New(in.cache, certmagic.Config{
		RenewalWindowRatio: opts.RenewalWindowRatio,
		OnEvent:            in.onEvent,
		ShouldEmitFunc:     func(e string) bool { return e == eventObtained || e == eventCached || e == eventFailed },
		DefaultServerName:  in.domains[0],
		Storage:            newRedactStorage(storage, opts.Secrets),
		Logger:             zl,
		Issuers:            []certmagic.Issuer{}, // replaced below; non-nil keeps the package default out
	})
	iss.Logger = zl
	in.issuer = certmagic.NewACMEIssuer(in.magic, iss)
	in.magic.Issuers = []certmagic.Issuer{in.issuer}

	in.tlsConf = &tls.Config{
		GetCertificate: in.getCertificate,
		// h2 and http/1.1 for the proxy (which tells the two apart by the
		// protocol negotiated); acme-tls/1 answers tls-alpn-01.
		NextProtos: []string{"h2", "http/1.1", acmez.ACMETLS1Protocol},
		MinVersion: tls.VersionTLS12,
	}
	if opts.ClientCAs != nil {
		in.tlsConf.ClientCAs, in.tlsConf.ClientAuth = opts.ClientCAs, tls.VerifyClientCertIfGiven
	}
	in.rotateTicketKeys(false)
}

// splitListen splits a listen address into host and port; ":8443" has
// the empty host.
func splitListen(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// TLSConfig returns the inbound listener's TLS configuration: certificates
// come from GetCertificate (the cached ACME certificate for the SNI name,
// the first domain's when there is no SNI, or the tls-alpn-01 challenge
// certificate), NextProtos is ["http/1.1", "acme-tls/1"]. It is the same
// value on every call; do not modify it. Serve through Listener rather
// than tls.NewListener(ln, TLSConfig()) so that Retired can tell which
// certificate each connection was given.
func (in *Inbound) TLSConfig() *tls.Config { return in.tlsConf }

// Listener returns a TLS listener on ln, the bound inbound TCP listener,
// that remembers for each connection which certificate its handshake was
// served (see Retired). Call it before Start: for tls-alpn-01 it also
// makes ln's address the one ACME challenges are answered on, so certmagic
// finds the port taken by this listener and lets it answer.
func (in *Inbound) Listener(ln net.Listener) net.Listener {
	if host, port, err := splitListen(ln.Addr().String()); err == nil && !in.started.Load() {
		in.tlsPort = port
		if in.challenge == ChallengeTLSALPN {
			in.issuer.ListenHost, in.issuer.AltTLSALPNPort = host, port
		}
	}
	return tls.NewListener(trackingListener{Listener: ln, in: in}, in.tlsConf)
}

// HTTPChallengeServer returns the server to run on ln, the bound
// tls.acme.http_listen listener, for challenge http-01: it answers the
// CA's /.well-known/acme-challenge/ requests (also those of another
// replica's orders, through shared storage) and redirects everything else
// to HTTPS with 308. Call it before Start, then run srv.Serve(ln) and
// srv.Shutdown on exit.
func (in *Inbound) HTTPChallengeServer(ln net.Listener) *http.Server {
	if host, port, err := splitListen(ln.Addr().String()); err == nil && !in.started.Load() &&
		in.challenge == ChallengeHTTP {
		in.issuer.ListenHost, in.issuer.AltHTTPPort = host, port
	}
	return &http.Server{
		Handler:           in.issuer.HTTPChallengeHandler(http.HandlerFunc(in.redirect)),
		ReadHeaderTimeout: challengeReadHeaderTimeout,
	}
}

// redirect sends a plain-HTTP request to the same URL on HTTPS.
func (in *Inbound) redirect(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		host = in.domains[0]
	}
	if in.tlsPort != 443 && in.tlsPort != 0 {
		host = net.JoinHostPort(host, strconv.Itoa(in.tlsPort))
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
}

// Start begins managing the domains' certificates in the background:
// certmagic loads them from storage or obtains them from the CA, retrying
// with backoff, and renews them before they expire. It returns at once;
// until a certificate is held, handshakes for its name fail and Ready is
// false. Everything Start began stops when ctx ends. Start may be called
// once.
func (in *Inbound) Start(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return errors.New("tls: inbound certificate manager already started")
	}
	if err := in.magic.ManageAsync(ctx, in.domains); err != nil {
		in.cache.Stop()
		close(in.done)
		return fmt.Errorf("tls: managing certificates for %s: %w", strings.Join(in.domains, ", "), err)
	}
	go in.maintain(ctx)
	return nil
}

// Run is Start followed by a wait until ctx ends and the background work
// has stopped, for an errgroup.
func (in *Inbound) Run(ctx context.Context) error {
	if err := in.Start(ctx); err != nil {
		return err
	}
	<-in.done
	return nil
}

// maintain watches for certificate swaps after each one certmagic obtains,
// rotates session-ticket keys, and stops the cache's maintenance when ctx
// ends.
func (in *Inbound) maintain(ctx context.Context) {
	defer close(in.done)
	defer in.cache.Stop()
	rotate := time.NewTicker(ticketKeyRotation)
	defer rotate.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rotate.C:
			in.rotateTicketKeys(true)
		case <-in.kick:
			in.awaitSwap(ctx)
		}
	}
}

// awaitSwap polls the cache until the certificates served change: certmagic
// reports a renewal before it swaps the new certificate in, and reports
// nothing after.
func (in *Inbound) awaitSwap(ctx context.Context) {
	before := in.snap.Load().gen
	poll := time.NewTicker(swapPoll)
	defer poll.Stop()
	limit := time.NewTimer(swapWait)
	defer limit.Stop()
	for in.refresh().gen == before {
		select {
		case <-ctx.Done():
			return
		case <-limit.C:
			return
		case <-poll.C:
		}
	}
}

// onEvent is certmagic's event callback; it runs on certmagic's goroutines
// and returns quickly.
func (in *Inbound) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	switch event {
	case eventCached:
		in.refresh()
	case eventObtained:
		in.setLastErr(name, "")
		select {
		case in.kick <- struct{}{}:
		default:
		}
	case eventFailed:
		msg := "obtaining the certificate failed"
		if err, ok := data["error"].(error); ok {
			msg = err.Error()
		}
		in.setLastErr(name, msg)
		in.log.WithFields(logrus.Fields{"domain": name, "error": msg}).Warn("certificate not obtained")
	}
	return nil
}

func (in *Inbound) setLastErr(name, msg string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if msg == "" {
		delete(in.lastErr, name)
	} else {
		in.lastErr[name] = msg
	}
}

// refresh reads the certificates certmagic now serves for the domains and,
// when they changed, publishes them as a new generation: session tickets
// issued before are invalidated first (a resumed session would skip the
// certificate), then Changed's channel is closed.
func (in *Inbound) refresh() *snapshot {
	in.refreshMu.Lock()
	defer in.refreshMu.Unlock()
	old := in.snap.Load()
	next := &snapshot{serials: map[string]bool{}, leaf: map[string]*x509.Certificate{}}
	for _, d := range in.domains {
		for _, c := range in.cache.AllMatchingCertificates(d) {
			if c.Leaf == nil {
				continue
			}
			next.serials[formatSerial(c.Leaf.SerialNumber)] = true
			if cur := next.leaf[d]; cur == nil || c.Leaf.NotAfter.After(cur.NotAfter) {
				next.leaf[d] = c.Leaf
			}
		}
	}
	if sameSet(old.serials, next.serials) {
		return old
	}
	next.gen = old.gen + 1
	in.rotateTicketKeys(false)
	in.snap.Store(next)
	in.mu.Lock()
	close(in.changed)
	in.changed = make(chan struct{})
	in.mu.Unlock()
	in.logChange(old, next)
	return next
}

func (in *Inbound) logChange(old, next *snapshot) {
	for _, d := range in.domains {
		leaf := next.leaf[d]
		if leaf == nil || (old.leaf[d] != nil && old.leaf[d].SerialNumber.Cmp(leaf.SerialNumber) == 0) {
			continue
		}
		in.log.WithFields(logrus.Fields{
			"domain": d, "serial": formatSerial(leaf.SerialNumber), "not_after": leaf.NotAfter.UTC(),
			"generation": next.gen,
		}).Info("inbound certificate in service")
	}
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// rotateTicketKeys installs a fresh session-ticket key, keeping the
// previous one for decryption only when keepPrevious is set.
func (in *Inbound) rotateTicketKeys(keepPrevious bool) {
	var k [32]byte
	rand.Read(k[:]) // never fails
	in.mu.Lock()
	defer in.mu.Unlock()
	keys := [][32]byte{k}
	if keepPrevious {
		keys = append(keys, in.ticket)
	}
	in.ticket = k
	in.tlsConf.SetSessionTicketKeys(keys)
}

// getCertificate is the GetCertificate callback: certmagic's, plus a note
// on the connection of which certificate it was served. Safe for
// concurrent use.
func (in *Inbound) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := in.magic.GetCertificate(hello)
	if err != nil {
		return nil, err
	}
	if isChallengeHello(hello) || cert == nil {
		return cert, nil
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
		}
	}
	serial := formatSerial(leaf.SerialNumber)
	snap := in.snap.Load()
	if !snap.serials[serial] {
		snap = in.refresh() // the cache changed before we noticed
	}
	if tc, ok := hello.Conn.(*trackedConn); ok {
		s := &servedCert{serial: serial}
		s.gen.Store(snap.gen)
		tc.served.Store(s)
	}
	return cert, nil
}

// isChallengeHello reports whether a ClientHello is the CA's tls-alpn-01
// validation (RFC 8737: only acme-tls/1 offered).
func isChallengeHello(h *tls.ClientHelloInfo) bool {
	return len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == acmez.ACMETLS1Protocol
}

// Generation counts the changes to the set of certificates served: it is
// incremented each time a certificate is obtained, renewed or replaced in
// the cache (after the swap, not when the CA answers).
func (in *Inbound) Generation() uint64 { return in.snap.Load().gen }

// Changed returns a channel closed at the next change of Generation.
func (in *Inbound) Changed() <-chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.changed
}

// Ready reports whether a certificate valid now is held for every domain.
func (in *Inbound) Ready() bool {
	snap := in.refresh()
	now := time.Now()
	for _, d := range in.domains {
		if l := snap.leaf[d]; l == nil || now.After(l.NotAfter) || now.Before(l.NotBefore) {
			return false
		}
	}
	return true
}

// Err says why Ready is false: for each domain without a valid
// certificate, the last failure certmagic reported, or that none was
// obtained yet. It is nil when Ready would be true.
func (in *Inbound) Err() error {
	snap := in.refresh()
	now := time.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	var errs []error
	for _, d := range in.domains {
		l := snap.leaf[d]
		switch {
		case l != nil && now.Before(l.NotAfter):
			continue
		case in.lastErr[d] != "":
			errs = append(errs, fmt.Errorf("certificate for %s: %s", d, in.lastErr[d]))
		case l != nil:
			errs = append(errs, fmt.Errorf("certificate for %s: expired", d))
		default:
			errs = append(errs, fmt.Errorf("certificate for %s: %w", d, ErrNotReady))
		}
	}
	return errors.Join(errs...)
}

// Certificates describes the certificate served for each domain, in the
// configured order; a domain without one yet has only its name, kind and
// subject.
func (in *Inbound) Certificates() []Info {
	snap := in.refresh()
	out := make([]Info, 0, len(in.domains))
	for _, d := range in.domains {
		if l := snap.leaf[d]; l != nil {
			out = append(out, leafInfo(d, KindInbound, l))
		} else {
			out = append(out, Info{Name: d, Kind: KindInbound, Subjects: []string{d}})
		}
	}
	return out
}

// Domains returns the managed domain names.
func (in *Inbound) Domains() []string { return slices.Clone(in.domains) }
