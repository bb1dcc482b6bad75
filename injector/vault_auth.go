package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/sirupsen/logrus"

	"github.com/sidekey/sidekey/config"
)

// Vault auth methods.
const (
	VaultAuthToken      = "token"
	VaultAuthAppRole    = "approle"
	VaultAuthKubernetes = "kubernetes"
)

const (
	// tokenRenewShare is the share of a token's TTL after which it is
	// renewed, or replaced by a new login when it cannot be renewed.
	tokenRenewShare = 2.0 / 3
	// tokenJitter is the largest share of that wait taken off it, so that
	// replicas do not all call Vault at the same instant.
	tokenJitter = 0.10
	// minReloginAge is how old a token must be before a refused call makes
	// the client log in again, so that a path the policy does not allow
	// cannot make it log in on every call.
	minReloginAge = time.Second
)

// Log field names of the Vault client.
const (
	fieldVaultAuth = "vault_auth"
	fieldTTL       = "ttl"
	fieldRenewable = "renewable"
)

// vaultLogin obtains an auth token. register is called with the login
// secrets read (a token, a role_id and secret_id, a JWT) before they are
// sent, so that the redactor knows them.
type vaultLogin interface {
	login(ctx context.Context, base *api.Client, register func([]string)) (tokenGrant, error)
	method() string
}

// tokenGrant is a token and its lease as Vault granted it.
type tokenGrant struct {
	token     string
	ttl       time.Duration // zero: does not expire
	increment time.Duration // what to ask for when renewing
	renewable bool
	owned     bool // created by this login, not handed in
}

// newVaultLogin builds the login of the configured auth method. The
// references are read at every login, so a rotated secret_id or a
// refreshed service-account token is followed.
func newVaultLogin(a config.VaultAuth) (vaultLogin, error) {
	mount := strings.Trim(a.Mount, "/")
	if mount == "" {
		mount = a.Method
	}
	switch a.Method {
	case VaultAuthToken:
		tok, err := loginRef("token", a.Token)
		if err != nil {
			return nil, err
		}
		return tokenLogin{token: tok}, nil
	case VaultAuthAppRole:
		roleID, err := loginRef("role_id", a.RoleID)
		if err != nil {
			return nil, err
		}
		secretID, err := loginRef("secret_id", a.SecretID)
		if err != nil {
			return nil, err
		}
		return appRoleLogin{mount: mount, roleID: roleID, secretID: secretID}, nil
	case VaultAuthKubernetes:
		if a.Role == "" {
			return nil, errors.New("kubernetes auth needs a role")
		}
		jwt := a.JWT
		if jwt == nil {
			jwt = &config.Ref{Kind: config.RefFile, Name: config.DefaultKubernetesJWT}
		}
		src, err := loginRef("jwt", jwt)
		if err != nil {
			return nil, err
		}
		return kubernetesLogin{mount: mount, role: a.Role, jwt: src}, nil
	}
	return nil, fmt.Errorf("unknown auth method %q", a.Method)
}

func loginRef(name string, r *config.Ref) (Source, error) {
	if r == nil {
		return nil, fmt.Errorf("%s is required", name)
	}
	src, err := RefSource(*r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return src, nil
}

// readLogin reads one login secret; empty is an error.
func readLogin(ctx context.Context, name string, src Source) (string, error) {
	s, err := src.Fetch(ctx)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", name, err)
	}
	if s.Value == "" {
		return "", fmt.Errorf("reading %s: empty", name)
	}
	return s.Value, nil
}

// tokenLogin uses a token handed in; "logging in" reads it again and looks
// it up, to learn its TTL.
type tokenLogin struct{ token Source }

func (tokenLogin) method() string { return VaultAuthToken }

func (l tokenLogin) login(ctx context.Context, base *api.Client, register func([]string)) (tokenGrant, error) {
	tok, err := readLogin(ctx, "token", l.token)
	if err != nil {
		return tokenGrant{}, err
	}
	register([]string{tok})
	cl, err := tokenClient(base, tok)
	if err != nil {
		return tokenGrant{}, err
	}
	sec, err := cl.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return tokenGrant{}, fmt.Errorf("looking up the vault token: %w", vaultError(err))
	}
	return grantFromLookup(tok, sec)
}

// grantFromLookup reads a token's lease from its lookup-self answer.
func grantFromLookup(tok string, sec *api.Secret) (tokenGrant, error) {
	if sec == nil || sec.Data == nil {
		return tokenGrant{}, errors.New("looking up the vault token: empty answer")
	}
	ttl, err := sec.TokenTTL()
	if err != nil {
		return tokenGrant{}, fmt.Errorf("looking up the vault token: ttl: %w", err)
	}
	renewable, _ := sec.TokenIsRenewable()
	inc := seconds(sec.Data["creation_ttl"])
	if inc <= 0 {
		inc = ttl
	}
	return tokenGrant{token: tok, ttl: ttl, increment: inc, renewable: renewable}, nil
}

// appRoleLogin logs in with a role_id and a secret_id.
type appRoleLogin struct {
	mount            string
	roleID, secretID Source
}

func (appRoleLogin) method() string { return VaultAuthAppRole }

func (l appRoleLogin) login(ctx context.Context, base *api.Client, register func([]string)) (tokenGrant, error) {
	roleID, err := readLogin(ctx, "role_id", l.roleID)
	if err != nil {
		return tokenGrant{}, err
	}
	secretID, err := readLogin(ctx, "secret_id", l.secretID)
	if err != nil {
		return tokenGrant{}, err
	}
	register([]string{roleID, secretID})
	return loginAt(ctx, base, l.mount, map[string]any{"role_id": roleID, "secret_id": secretID})
}

// kubernetesLogin logs in with the pod's service-account JWT and a role.
type kubernetesLogin struct {
	mount, role string
	jwt         Source
}

func (kubernetesLogin) method() string { return VaultAuthKubernetes }

func (l kubernetesLogin) login(ctx context.Context, base *api.Client, register func([]string)) (tokenGrant, error) {
	jwt, err := readLogin(ctx, "jwt", l.jwt)
	if err != nil {
		return tokenGrant{}, err
	}
	register([]string{jwt})
	return loginAt(ctx, base, l.mount, map[string]any{"role": l.role, "jwt": jwt})
}

// loginAt writes to auth/MOUNT/login and reads the token it grants.
func loginAt(ctx context.Context, base *api.Client, mount string, data map[string]any) (tokenGrant, error) {
	path := "auth/" + mount + "/login"
	sec, err := base.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return tokenGrant{}, fmt.Errorf("logging in at %s: %w", path, vaultError(err))
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return tokenGrant{}, fmt.Errorf("logging in at %s: no token in the answer", path)
	}
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	return tokenGrant{token: sec.Auth.ClientToken, ttl: ttl, increment: ttl, renewable: sec.Auth.Renewable, owned: true}, nil
}

// tokenClient is a copy of base (address, TLS, namespace) carrying tok.
func tokenClient(base *api.Client, tok string) (*api.Client, error) {
	cl, err := base.CloneWithHeaders()
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	cl.SetToken(tok)
	return cl, nil
}

// seconds reads a JSON number of seconds; anything else is zero.
func seconds(v any) time.Duration {
	var n int64
	switch v := v.(type) {
	case json.Number:
		n, _ = v.Int64()
	case float64:
		n = int64(v)
	case int:
		n = int64(v)
	case int64:
		n = v
	}
	return time.Duration(n) * time.Second
}

// planAuth returns what the auth loop does next for the session s and
// when: a renewal at about two thirds of the TTL (made earlier by up to
// tokenJitter of that wait; jitter in [0, 1) picks how much), or a login
// instead when the token cannot be renewed. No session is a login now; a
// token without a TTL needs nothing (zero time). The wait is at least
// minRefreshDelay from now.
func planAuth(now time.Time, s *vaultSession, jitter float64) (login bool, at time.Time) {
	if s == nil {
		return true, now
	}
	if s.ttl <= 0 {
		return false, time.Time{}
	}
	wait := time.Duration(float64(s.ttl) * tokenRenewShare * (1 - tokenJitter*jitter))
	at = s.obtained.Add(wait)
	if floor := now.Add(minRefreshDelay); at.Before(floor) {
		at = floor
	}
	return !s.renewable, at
}

// authAction is the auth loop's next step.
type authAction struct {
	login bool
	at    time.Time // zero: only when woken
}

// Run logs in, then keeps the auth token alive until ctx ends, and
// returns nil. It renews the token at about two thirds of its TTL, and
// logs in again instead when the token is not renewable, when a renewal
// is capped by the max TTL, or when a call was refused with 403. It never
// gives up: failed logins and renewals are retried with backoff (and a
// renewal that Vault refuses, or one tried after the token expired,
// becomes a login), while what the holders already hold keeps serving. A second Run while one runs returns an error at once.
func (c *VaultClient) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("vault client is already running")
	}
	defer c.running.Store(false)
	next := authAction{login: true, at: c.clk.Now()}
	failures := 0
	for {
		relogin, ok := c.wait(ctx, next.at)
		if !ok {
			return nil
		}
		s := c.current()
		if relogin {
			if !c.takeRelogin() {
				continue
			}
			if at := s.obtained.Add(minReloginAge); c.clk.Now().Before(at) {
				next = authAction{login: true, at: at}
				continue
			}
			next.login = true
		}
		doLogin := next.login || s == nil
		var err error
		if doLogin {
			err = c.login(ctx)
		} else {
			err = c.renew(ctx, s)
		}
		now := c.clk.Now()
		if err == nil {
			failures = 0
			next.login, next.at = planAuth(now, c.current(), c.random())
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		delay := Backoff(failures, c.lo, c.hi, c.random())
		failures++
		next = authAction{
			login: doLogin || isClientError(err) || tokenExpired(s, now),
			at:    RetryAt(now, delay, s.expiresAt()),
		}
		c.failed(err, doLogin, next.at.Sub(now))
	}
}

// tokenExpired reports whether the token of s is past its TTL.
func tokenExpired(s *vaultSession, now time.Time) bool {
	at := s.expiresAt()
	return !at.IsZero() && !now.Before(at)
}

// wait blocks until at (zero: indefinitely), a relogin request or the end
// of ctx. relogin reports a request; ok is false when ctx ended.
func (c *VaultClient) wait(ctx context.Context, at time.Time) (relogin, ok bool) {
	var fire <-chan time.Time
	if !at.IsZero() {
		t := c.clk.NewTimer(at.Sub(c.clk.Now()))
		defer t.Stop()
		fire = t.C()
	}
	select {
	case <-ctx.Done():
		return false, false
	case <-c.reloginC:
		return true, true
	case <-fire:
		return false, true
	}
}

// login obtains a new token and stores it as the session.
func (c *VaultClient) login(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	now := c.clk.Now()
	g, err := c.method.login(ctx, c.base, c.setMaterial)
	if err != nil {
		return err
	}
	cl, err := tokenClient(c.base, g.token)
	if err != nil {
		return err
	}
	old := c.current()
	c.setSession(&vaultSession{
		client: cl, token: g.token, obtained: now, ttl: g.ttl,
		increment: g.increment, renewable: g.renewable, owned: g.owned,
	})
	e := c.log.WithFields(logrus.Fields{
		fieldVaultAuth: c.method.method(), fieldTTL: g.ttl.String(), fieldRenewable: g.renewable,
	})
	if old != nil && old.token == g.token {
		e.Debug("vault token checked")
	} else {
		e.Info("vault login")
	}
	return nil
}

// renew extends the token of s and stores the renewed session. A renewal
// granting less than asked for has hit the token's max TTL: the token
// cannot be extended again and may have little time left, so it is
// replaced by a login at once, while it still works.
func (c *VaultClient) renew(ctx context.Context, s *vaultSession) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	now := c.clk.Now()
	sec, err := s.client.Auth().Token().RenewSelfWithContext(ctx, int(s.increment/time.Second))
	if err != nil {
		return fmt.Errorf("renewing the vault token: %w", vaultError(err))
	}
	if sec == nil || sec.Auth == nil {
		return errors.New("renewing the vault token: no lease in the answer")
	}
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	e := c.log.WithFields(logrus.Fields{
		fieldVaultAuth: c.method.method(), fieldTTL: ttl.String(), fieldRenewable: sec.Auth.Renewable,
	})
	if ttl < s.increment {
		e.Debug("vault token at its max TTL")
		if err := c.login(ctx); err != nil {
			return fmt.Errorf("replacing the vault token at its max TTL: %w", err)
		}
		return nil
	}
	r := *s
	r.obtained, r.ttl, r.renewable = now, ttl, sec.Auth.Renewable
	if c.current() != s { // a login replaced s meanwhile
		return nil
	}
	c.setSession(&r)
	e.Debug("vault token renewed")
	return nil
}

// failed records a failed login or renewal for the callers waiting on one
// and logs it.
func (c *VaultClient) failed(err error, login bool, retryIn time.Duration) {
	c.mu.Lock()
	if c.sess == nil {
		c.lastErr = err
	}
	c.mu.Unlock()
	msg := "vault token renewal failed"
	if login {
		msg = "vault login failed"
	}
	c.log.WithFields(logrus.Fields{fieldVaultAuth: c.method.method(), fieldRetryIn: retryIn.String()}).
		WithError(err).Warn(msg)
}
