package injector

import (
	"context"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/config"
)

// ErrNoVault reports a credential or reference that reads from Vault built
// without a VaultClient: build it with Sources, its Vault field set. It
// wraps ErrUnsupportedSource. Classify with errors.Is.
var ErrNoVault = fmt.Errorf("%w without a vault client", ErrUnsupportedSource)

// errNotLoggedIn is returned by Vault calls made while the client has no
// token yet.
var errNotLoggedIn = errors.New("not logged in to vault")

const (
	// loginWait is how long a Vault call waits for a token when the client
	// has none yet (start-up) or has just been refused one (a 403), before
	// failing so that the holder retries with its own backoff.
	loginWait = 10 * time.Second
	// maxVaultErrorText bounds the Vault error text an error message quotes.
	maxVaultErrorText = 200
)

// VaultOptions are the optional parts of a VaultClient. Their zero values
// are useful.
type VaultOptions struct {
	// Clock schedules token renewal and re-login and stamps the values the
	// Vault sources return; nil is SystemClock. Share the holders' clock.
	Clock Clock
	// Log receives login, renewal and failure lines, never a token or a
	// login secret; nil discards them.
	Log logrus.FieldLogger
	// Secrets, when set, is told of the auth token and of the login
	// secrets (token, role_id, secret_id, JWT) while they are live, so that
	// the log redactor can scrub them.
	Secrets SecretSet
	// RetryMin and RetryMax bound the backoff after a failed login or
	// renewal: RetryMin (zero: 1s) doubling up to RetryMax (zero: 1m), each
	// delay shortened by up to a quarter at random.
	RetryMin time.Duration
	RetryMax time.Duration
}

// VaultClient is an authenticated Vault client shared by the Vault sources.
//
// NewVaultClient builds it without contacting Vault; Run logs in and then
// keeps the auth token alive: it renews the token at about two thirds of
// its TTL while it is renewable, logs in again when it is not (or when its
// max TTL is near, or a call was refused with 403), and retries failures
// with capped exponential backoff and jitter. A Vault outage only makes Run
// retry: the client never drops, revokes or invalidates anything because
// Vault is unreachable, so the holders keep serving the values they have
// until those expire.
//
// Do, Read and Write are safe for concurrent use with each other and with
// Run. Tokens, login secrets and secret values never appear in its errors
// or log lines.
//
// Wiring in a command, when the configuration has a vault section:
//
//	vc, err := injector.NewVaultClient(cfg.Vault, injector.VaultOptions{Log: log, Secrets: red})
//	set, err := injector.NewSet(cfg.Credentials, injector.SetOptions{
//		Log: log, Secrets: red, NewSource: injector.Sources{Vault: vc}.New})
//	// run vc.Run(ctx) beside set.Run(ctx), under the same context;
//	// on a clean exit with revoke_on_exit: set.Revoke(ctx), then vc.Revoke(ctx).
type VaultClient struct {
	base    *api.Client // address, TLS and namespace; never carries a token
	method  vaultLogin
	clk     Clock
	log     logrus.FieldLogger
	secrets SecretSet
	lo, hi  time.Duration
	random  func() float64
	running atomic.Bool

	mu       sync.Mutex
	sess     *vaultSession
	changed  chan struct{} // closed and replaced whenever sess changes
	relogin  *vaultSession // a call was refused with this session's token
	reloginC chan struct{}
	lastErr  error    // the last login failure, for callers waiting on one
	material []string // login secrets registered with secrets
}

// vaultSession is one auth token and what is known of its lease. It is
// immutable: a renewal stores a new session with the same client.
type vaultSession struct {
	client    *api.Client // carries token; never modified after creation
	token     string
	obtained  time.Time     // when the TTL below was granted
	ttl       time.Duration // zero: the token does not expire
	increment time.Duration // the TTL to ask for when renewing
	renewable bool
	owned     bool // created by a login of this client: revoked at exit
}

// expiresAt is when the token stops working; zero means never.
func (s *vaultSession) expiresAt() time.Time {
	if s == nil || s.ttl <= 0 {
		return time.Time{}
	}
	return s.obtained.Add(s.ttl)
}

// NewVaultClient builds a client for the vault section of a configuration.
// Address, CA certificate and namespace come from cfg, else from
// VAULT_ADDR, VAULT_CACERT (and the other VAULT_* TLS variables) and
// VAULT_NAMESPACE; VAULT_TOKEN is ignored, the token comes from cfg.Auth.
// The Vault API's own retries are off unless VAULT_MAX_RETRIES is set: the
// client and the holders back off themselves. It does not contact Vault;
// Run logs in.
func NewVaultClient(cfg *config.Vault, opts VaultOptions) (*VaultClient, error) {
	if cfg == nil {
		return nil, errors.New("vault: no vault configuration")
	}
	method, err := newVaultLogin(cfg.Auth)
	if err != nil {
		return nil, fmt.Errorf("vault.auth: %w", err)
	}
	base, err := newAPIClient(cfg)
	if err != nil {
		return nil, err
	}
	c := &VaultClient{
		base:     base,
		method:   method,
		clk:      opts.Clock,
		log:      opts.Log,
		secrets:  newCountedSet(opts.Secrets),
		lo:       opts.RetryMin,
		hi:       opts.RetryMax,
		random:   mathrand.Float64,
		changed:  make(chan struct{}),
		reloginC: make(chan struct{}, 1),
	}
	if c.clk == nil {
		c.clk = SystemClock{}
	}
	if c.log == nil {
		l := logrus.New()
		l.Out = io.Discard
		l.Level = logrus.PanicLevel
		c.log = l
	}
	return c, nil
}

// newAPIClient builds the token-less base client.
func newAPIClient(cfg *config.Vault) (*api.Client, error) {
	conf := api.DefaultConfig() // reads the VAULT_* environment
	if conf.Error != nil {
		return nil, fmt.Errorf("vault: %w", conf.Error)
	}
	if cfg.Address != "" {
		conf.Address = cfg.Address
	}
	if cfg.CACert != "" {
		if err := conf.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("vault.ca_cert: %w", err)
		}
	}
	if os.Getenv(api.EnvVaultMaxRetries) == "" {
		conf.MaxRetries = 0
	}
	client, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	client.ClearToken()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	return client, nil
}

// Do calls fn with a client that carries the current auth token. It waits
// for the first login (up to 10s) when there is none yet. When fn fails
// with 403 permission denied, it asks Run to log in again, waits for the
// new token and calls fn once more. Vault's answers come back as errors of
// one line that wrap *api.ResponseError. fn must not keep or modify the
// client.
func (c *VaultClient) Do(ctx context.Context, fn func(*api.Client) error) error {
	s, err := c.session(ctx, nil)
	if err != nil {
		return err
	}
	err = fn(s.client)
	if !isStatus(err, http.StatusForbidden) {
		return vaultError(err)
	}
	c.askRelogin(s)
	next, werr := c.session(ctx, s)
	if werr != nil {
		return vaultError(err)
	}
	return vaultError(fn(next.client))
}

// Read reads a Vault path (GET); a path with nothing at it is an error.
func (c *VaultClient) Read(ctx context.Context, path string) (*api.Secret, error) {
	var sec *api.Secret
	err := c.Do(ctx, func(cl *api.Client) (err error) {
		sec, err = cl.Logical().ReadWithContext(ctx, path)
		return err
	})
	if err == nil && sec == nil {
		err = fmt.Errorf("vault: nothing at %s", path)
	}
	return sec, err
}

// Write writes data to a Vault path (PUT) and returns the answer; an empty
// answer is an error.
func (c *VaultClient) Write(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	var sec *api.Secret
	err := c.Do(ctx, func(cl *api.Client) (err error) {
		sec, err = cl.Logical().WriteWithContext(ctx, path, data)
		return err
	})
	if err == nil && sec == nil {
		err = fmt.Errorf("vault: no answer from %s", path)
	}
	return sec, err
}

// session returns the current session when it is not stale, waiting up to
// loginWait for one (or for a new one) to be stored.
func (c *VaultClient) session(ctx context.Context, stale *vaultSession) (*vaultSession, error) {
	var timer Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		s, changed := c.sess, c.changed
		c.mu.Unlock()
		if s != nil && s != stale {
			return s, nil
		}
		if timer == nil {
			timer = c.clk.NewTimer(loginWait)
		}
		select {
		case <-changed:
		case <-timer.C():
			return nil, c.notLoggedIn(nil)
		case <-ctx.Done():
			return nil, c.notLoggedIn(ctx.Err())
		}
	}
}

// notLoggedIn is the error of a call that found no usable token: why, else
// the last login failure.
func (c *VaultClient) notLoggedIn(why error) error {
	if why == nil {
		c.mu.Lock()
		why = c.lastErr
		c.mu.Unlock()
	}
	if why == nil {
		return errNotLoggedIn
	}
	return fmt.Errorf("%w: %w", errNotLoggedIn, why)
}

// setSession stores s, registering its token with the redactor before any
// call can use it and unregistering a replaced one.
func (c *VaultClient) setSession(s *vaultSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.sess
	if c.secrets != nil && s != nil && (old == nil || old.token != s.token) {
		c.secrets.Add(s.token)
	}
	c.sess = s
	c.lastErr = nil
	close(c.changed)
	c.changed = make(chan struct{})
	if c.secrets != nil && old != nil && (s == nil || old.token != s.token) {
		c.secrets.Remove(old.token)
	}
}

func (c *VaultClient) current() *vaultSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// askRelogin asks Run to log in again because s's token was refused.
func (c *VaultClient) askRelogin(s *vaultSession) {
	c.mu.Lock()
	if c.sess == s {
		c.relogin = s
	}
	c.mu.Unlock()
	poke(c.reloginC)
}

// takeRelogin reports whether a login was asked for the current session,
// and clears the request.
func (c *VaultClient) takeRelogin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := c.relogin != nil && c.relogin == c.sess
	c.relogin = nil
	return want
}

// setMaterial registers the login secrets just read, and unregisters the
// ones they replace.
func (c *VaultClient) setMaterial(values []string) {
	if c.secrets == nil {
		return
	}
	c.secrets.Add(values...)
	c.mu.Lock()
	old := c.material
	c.material = values
	c.mu.Unlock()
	c.secrets.Remove(old...)
}

// Revoke is for a clean exit with revoke_on_exit, after Run has returned
// and after the holders revoked their leases (Set.Revoke): it revokes the
// auth token when a login of this client created it (approle,
// kubernetes), which makes Vault revoke every lease still held by the
// token too. A token given with the token method belongs to the operator
// and is left alone. The client has no token afterwards.
func (c *VaultClient) Revoke(ctx context.Context) error {
	s := c.current()
	if s == nil {
		return nil
	}
	var err error
	if s.owned {
		err = vaultError(s.client.Auth().Token().RevokeSelfWithContext(ctx, ""))
	}
	if err != nil {
		return fmt.Errorf("revoking the vault token: %w", err)
	}
	c.setSession(nil)
	c.setMaterial(nil)
	return nil
}

// Sources builds the Source of a configured credential or secret
// reference, with access to Vault when Vault is set. Its zero value builds
// what NewSource and RefSource build. Pass its New method as
// SetOptions.NewSource.
type Sources struct {
	// Vault serves the vault-kv and vault-lease sources and vault:
	// references; nil refuses them with ErrNoVault.
	Vault *VaultClient
}

// New builds the Source of one configured credential: the Vault sources,
// and an oauth2 source whose client_secret is a vault: reference, with the
// client; everything else through NewSource. Like NewSource it does not
// fetch.
func (s Sources) New(c config.Credential) (Source, error) {
	if s.Vault == nil {
		return NewSource(c)
	}
	switch c.Source {
	case config.SourceVaultKV:
		if c.Path == "" || c.Field == "" {
			return nil, fmt.Errorf("credential %q: vault-kv source needs a path and a field", c.Name)
		}
		return &VaultKVSource{Client: s.Vault, Path: c.Path, Field: c.Field}, nil
	case config.SourceVaultLease:
		if c.Path == "" {
			return nil, fmt.Errorf("credential %q: vault-lease source needs a path", c.Name)
		}
		src := &VaultLeaseSource{Client: s.Vault, Path: c.Path, Data: c.Data, Clock: s.Vault.clk}
		if c.Renew {
			return &RenewingVaultLeaseSource{src}, nil
		}
		return src, nil
	case config.SourceOAuth2:
		return s.oauth2(c)
	}
	return NewSource(c)
}

// oauth2 builds an oauth2 source, reading a vault: client_secret through
// the client. NewSource cannot build that reference, so it is given a
// stand-in that is replaced before the source is used.
func (s Sources) oauth2(c config.Credential) (Source, error) {
	ref := c.ClientSecret
	if ref == nil || ref.Kind != config.RefVault {
		return NewSource(c)
	}
	secret, err := s.Ref(*ref)
	if err != nil {
		return nil, fmt.Errorf("credential %q: client_secret: %w", c.Name, err)
	}
	c.ClientSecret = &config.Ref{Kind: config.RefEnv, Name: "client_secret"}
	src, err := NewSource(c)
	if err != nil {
		return nil, err
	}
	o, ok := src.(*OAuth2Source)
	if !ok {
		return nil, fmt.Errorf("credential %q: client_secret: a vault: reference is not supported here", c.Name)
	}
	o.ClientSecret = secret
	return o, nil
}

// Ref returns the Source behind a secret reference: vault:PATH#FIELD reads
// the field of a KV v2 secret on every Fetch (so a rotation is followed);
// env: and file: are RefSource's.
func (s Sources) Ref(r config.Ref) (Source, error) {
	if r.Kind != config.RefVault || s.Vault == nil {
		return RefSource(r)
	}
	if r.Name == "" || r.Field == "" {
		return nil, fmt.Errorf("%s: vault: needs PATH#FIELD", r)
	}
	return &VaultKVSource{Client: s.Vault, Path: r.Name, Field: r.Field}, nil
}

// Resolve fetches the current value of a secret reference once, like the
// package's Resolve, with vault: references read through s.Vault.
func (s Sources) Resolve(ctx context.Context, r config.Ref) (string, error) {
	src, err := s.Ref(r)
	if err != nil {
		return "", err
	}
	sec, err := src.Fetch(ctx)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", r, err)
	}
	return sec.Value, nil
}

// vaultResponseError is a Vault error answer in one line: the request, the
// status and Vault's messages, cut short. It never holds a request body.
type vaultResponseError struct {
	err *api.ResponseError
}

func (e *vaultResponseError) Error() string {
	path := e.err.URL
	if u, err := url.Parse(e.err.URL); err == nil {
		path = u.Path
	}
	msg := strings.Join(e.err.Errors, "; ")
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > maxVaultErrorText {
		msg = msg[:maxVaultErrorText] + "..."
	}
	s := fmt.Sprintf("vault: %s %s: status %d", e.err.HTTPMethod, path, e.err.StatusCode)
	if msg != "" {
		s += ": " + msg
	}
	return s
}

func (e *vaultResponseError) Unwrap() error { return e.err }

// vaultError rewrites a Vault error answer as one line; other errors
// (transport failures, nil) pass unchanged.
func vaultError(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		var already *vaultResponseError
		if errors.As(err, &already) {
			return err
		}
		return &vaultResponseError{err: re}
	}
	return err
}

// isStatus reports whether err is a Vault answer with the given status.
func isStatus(err error, status int) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

// isClientError reports whether err is a Vault answer in the 4xx range: a
// refusal that retrying the same request will not change.
func isClientError(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500
}
