package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	mathrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// Client certificate sources (certificates.NAME.source).
const (
	SourceVaultPKI = "vault-pki"
	SourceFile     = "file"
)

// issueTimeout bounds one call to Vault's pki/issue.
const issueTimeout = time.Minute

// ClientOptions are the optional parts of a ClientCert. Their zero values
// are useful, except that the vault-pki source needs Vault.
type ClientOptions struct {
	// Vault issues vault-pki certificates; *injector.VaultClient fits.
	Vault Vault
	// Clock schedules renewals and retries; nil is the system clock.
	Clock injector.Clock
	// Log receives rotation and failure lines, never key material; nil
	// discards them.
	Log logrus.FieldLogger
	// Secrets is told of the current private key (its PEM and the lines
	// of its body) while it is in use.
	Secrets SecretSet
	// RetryMin and RetryMax bound the backoff after a failed issue or
	// reload: RetryMin (zero: 1s) doubling up to RetryMax (zero: 1m), each
	// delay shortened by up to a quarter at random.
	RetryMin, RetryMax time.Duration
}

// ClientCert holds one outbound client certificate (certificates.NAME)
// and keeps it fresh: vault-pki certificates are issued by writing to
// pki/issue/ROLE and renewed two thirds into their lifetime, with backoff
// and jitter; file certificates are re-read whenever the certificate or
// key file changes. Each new certificate is checked (it parses, the key
// matches) and swapped in with one atomic store; on any failure the
// current one stays.
//
// Build it with NewClientCert and run Run; GetClientCertificate serves
// the current certificate to TLS handshakes. All methods are safe for
// concurrent use.
type ClientCert struct {
	cfg     config.Certificate
	vault   Vault
	clk     injector.Clock
	log     logrus.FieldLogger
	lo, hi  time.Duration
	random  func() float64
	running atomic.Bool

	cur atomic.Pointer[clientValue]

	mu      sync.Mutex // guards the fields below
	lastErr error
	changed chan struct{} // closed and replaced on every new certificate
	reg     registered
}

// clientValue is one immutable certificate and its generation.
type clientValue struct {
	cert   *tls.Certificate // Leaf set
	gen    uint64
	serial string
}

// NewClientCert builds the holder of a configured client certificate. It
// checks the configuration but loads nothing: Run does, so that a
// certificate that cannot be had at start-up makes the proxy unready
// rather than stopping it.
func NewClientCert(cfg config.Certificate, opts ClientOptions) (*ClientCert, error) {
	switch cfg.Source {
	case SourceVaultPKI:
		if opts.Vault == nil {
			return nil, fmt.Errorf("certificate %q: %w", cfg.Name, ErrNoVault)
		}
		if cfg.Path == "" || cfg.CommonName == "" {
			return nil, fmt.Errorf("certificate %q: vault-pki needs a path and a common_name", cfg.Name)
		}
	case SourceFile:
		if cfg.CertFile == "" || cfg.KeyFile == "" {
			return nil, fmt.Errorf("certificate %q: file needs cert and key", cfg.Name)
		}
	default:
		return nil, fmt.Errorf("certificate %q: unknown source %q", cfg.Name, cfg.Source)
	}
	c := &ClientCert{
		cfg: cfg, vault: opts.Vault, clk: opts.Clock, log: opts.Log,
		lo: opts.RetryMin, hi: opts.RetryMax, random: mathrand.Float64,
		changed: make(chan struct{}), reg: registered{secrets: opts.Secrets},
	}
	if c.clk == nil {
		c.clk = injector.SystemClock{}
	}
	if c.log == nil {
		c.log = discardLogger()
	}
	c.log = c.log.WithField("certificate", cfg.Name)
	return c, nil
}

// Name is the certificate's name in the configuration.
func (c *ClientCert) Name() string { return c.cfg.Name }

// GetClientCertificate is a tls.Config.GetClientCertificate callback: it
// returns the current certificate, with one atomic load. Before the first
// certificate is held it fails the handshake with ErrNotReady.
func (c *ClientCert) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	v := c.cur.Load()
	if v == nil {
		return nil, fmt.Errorf("client certificate %q: %w", c.cfg.Name, ErrNotReady)
	}
	return v.cert, nil
}

// Certificate returns the current certificate (Leaf set), or nil.
func (c *ClientCert) Certificate() *tls.Certificate {
	if v := c.cur.Load(); v != nil {
		return v.cert
	}
	return nil
}

// Generation counts the certificates held: 0 before the first, then 1,
// 2... A re-read that finds the same certificate is not a new generation.
func (c *ClientCert) Generation() uint64 {
	if v := c.cur.Load(); v != nil {
		return v.gen
	}
	return 0
}

// Serial is the current certificate's serial number as Info shows it, or
// "" before the first.
func (c *ClientCert) Serial() string {
	if v := c.cur.Load(); v != nil {
		return v.serial
	}
	return ""
}

// Changed returns a channel closed when the next certificate is swapped
// in.
func (c *ClientCert) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Info describes the current certificate for the admin API.
func (c *ClientCert) Info() Info {
	if v := c.cur.Load(); v != nil {
		return leafInfo(c.cfg.Name, KindClient, v.cert.Leaf)
	}
	return Info{Name: c.cfg.Name, Kind: KindClient, Subjects: []string{}}
}

// Ready reports whether a certificate valid now is held.
func (c *ClientCert) Ready() bool {
	v := c.cur.Load()
	now := c.clk.Now()
	return v != nil && !now.Before(v.cert.Leaf.NotBefore) && now.Before(v.cert.Leaf.NotAfter)
}

// Err says why Ready is false (the last failure, or that none was loaded
// yet, or that the certificate expired); nil when it is true.
func (c *ClientCert) Err() error {
	if c.Ready() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.lastErr != nil:
		return fmt.Errorf("client certificate %q: %w", c.cfg.Name, c.lastErr)
	case c.cur.Load() != nil:
		return fmt.Errorf("client certificate %q: expired or not yet valid", c.cfg.Name)
	}
	return fmt.Errorf("client certificate %q: %w", c.cfg.Name, ErrNotReady)
}

// Run loads the certificate and keeps it fresh until ctx ends, then
// returns nil. Failures are retried with backoff, never returned. Run may
// be called once.
func (c *ClientCert) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return fmt.Errorf("certificate %q: already running", c.cfg.Name)
	}
	if c.cfg.Source == SourceFile {
		return c.runFile(ctx)
	}
	return c.runVault(ctx)
}

// runVault issues a certificate, sleeps until it is due for renewal,
// and repeats; failures back off.
func (c *ClientCert) runVault(ctx context.Context) error {
	failures := 0
	for {
		var at time.Time
		cert, err := c.issue(ctx)
		now := c.clk.Now()
		if err == nil {
			c.store(cert)
			failures = 0
			at = renewAt(now, cert.Leaf.NotBefore, cert.Leaf.NotAfter, c.random())
		} else {
			if ctx.Err() != nil {
				return nil
			}
			delay := injector.Backoff(failures, c.lo, c.hi, c.random())
			failures++
			c.fail(err, delay)
			var notAfter time.Time
			if v := c.cur.Load(); v != nil {
				notAfter = v.cert.Leaf.NotAfter
			}
			at = injector.RetryAt(now, delay, notAfter)
		}
		if !c.sleep(ctx, at.Sub(now)) {
			return nil
		}
	}
}

// sleep waits d on the clock; false when ctx ended first.
func (c *ClientCert) sleep(ctx context.Context, d time.Duration) bool {
	return injector.Sleep(ctx, c.clk, d)
}

// fail records a failed load and logs it.
func (c *ClientCert) fail(err error, retryIn time.Duration) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
	l := c.log.WithField("error", err.Error())
	if retryIn > 0 {
		l = l.WithField("retry_in", retryIn.String())
	}
	l.Warn("client certificate not loaded; keeping the current one")
}

// store swaps cert in unless it is the certificate already held.
func (c *ClientCert) store(cert *tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = nil
	old := c.cur.Load()
	if old != nil && bytes.Equal(old.cert.Certificate[0], cert.Certificate[0]) {
		return
	}
	v := &clientValue{cert: cert, serial: formatSerial(cert.Leaf.SerialNumber)}
	if old != nil {
		v.gen = old.gen + 1
	} else {
		v.gen = 1
	}
	c.cur.Store(v)
	close(c.changed)
	c.changed = make(chan struct{})
	fields := logrus.Fields{"serial": v.serial, "not_after": cert.Leaf.NotAfter.UTC(), "generation": v.gen}
	if old != nil {
		fields["old_serial"] = old.serial
	}
	c.log.WithFields(fields).Info("client certificate rotated")
}

// keyPair checks a certificate chain and key (PEM) and returns them as a
// tls.Certificate with Leaf set; it registers the key with the SecretSet
// under the certificate's name, replacing the previous one. No error
// contains key material.
func (c *ClientCert) keyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
		}
	}
	if vals := keySecrets(keyPEM); vals != nil {
		c.mu.Lock()
		c.reg.set(c.cfg.Name, vals)
		c.mu.Unlock()
	}
	return &pair, nil
}
