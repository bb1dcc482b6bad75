package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	credentialSources = []string{SourceVaultKV, SourceVaultLease, SourceOAuth2, SourceFile, SourceEnv, SourceExec}
	credentialCommon  = []string{"source", "refresh_before", "max_stale"}
	credentialKeys    = map[string]keySet{
		SourceVaultKV:    {uses: []string{"path", "field", "refresh"}, needs: []string{"path", "field"}},
		SourceVaultLease: {uses: []string{"path", "data", "renew", "revoke_old"}, needs: []string{"path"}},
		SourceOAuth2: {
			uses:  []string{"token_url", "client_id", "client_secret", "scopes", "audience", "auth_style", "revocation_url", "params"},
			needs: []string{"token_url", "client_id", "client_secret"},
		},
		SourceFile: {uses: []string{"path"}, needs: []string{"path"}},
		SourceEnv:  {uses: []string{"name"}, needs: []string{"name"}},
		SourceExec: {uses: []string{"command", "timeout", "refresh"}, needs: []string{"command"}},
	}
	authStyles = []string{"basic", "post"}
	// reservedParams are token-request parameters sidekey sets itself.
	reservedParams = []string{"grant_type", "client_id", "client_secret", "scope", "audience"}
)

// credentials converts every credential, sorted by name. A credential with
// problems is still listed, so that routes naming it are not reported too.
func (c *checker) credentials(fs map[string]*fileCredential) []Credential {
	out := make([]Credential, 0, len(fs))
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		out = append(out, c.credential(name, fs[name]))
	}
	return out
}

func (c *checker) credential(name string, f *fileCredential) Credential {
	path := "credentials." + name
	c.name(f.line, path, name)
	var source string
	if c.require(&f.meta, path, "source") && c.oneOf(path+".source", f.Source, &source, credentialSources) {
		c.checkKeys(&f.meta, path, "source "+source, credentialKeys[source], credentialCommon...)
	}
	if source == SourceVaultKV || source == SourceVaultLease {
		c.needVault(f.Source.line, path, "source "+source)
	}
	cr := newCredential(name, source, f.line)
	c.storeFields(path, f, &cr)
	c.oauth2Fields(path, f, &cr)
	c.execFields(path, f, &cr)
	c.lifetimeFields(path, f, &cr)
	return cr
}

// storeFields reads the fields of the vault, file and env sources.
func (c *checker) storeFields(path string, f *fileCredential, cr *Credential) {
	c.nonEmpty(path+".path", f.Path, &cr.Path)
	c.nonEmpty(path+".field", f.Field, &cr.Field)
	c.positive(path+".refresh", f.Refresh, &cr.Refresh)
	f.Data.to(&cr.Data)
	f.Renew.to(&cr.Renew)
	f.RevokeOld.to(&cr.RevokeOld)
	if f.Name.ok() && !envNameRE.MatchString(f.Name.v) {
		c.add(f.Name.line, path+".name", "%s is not an environment variable name", quote(f.Name.v))
		return
	}
	f.Name.to(&cr.EnvName)
}

func (c *checker) oauth2Fields(path string, f *fileCredential, cr *Credential) {
	if c.httpURL(path+".token_url", f.TokenURL) != nil {
		cr.TokenURL = f.TokenURL.v
	}
	c.nonEmpty(path+".client_id", f.ClientID, &cr.ClientID)
	cr.ClientSecret = c.ref(path+".client_secret", f.ClientSecret)
	cr.Scopes = c.scopes(path+".scopes", f.Scopes)
	f.Audience.to(&cr.Audience)
	c.oneOf(path+".auth_style", f.AuthStyle, &cr.AuthStyle, authStyles)
	if c.httpURL(path+".revocation_url", f.RevocationURL) != nil {
		cr.RevocationURL = f.RevocationURL.v
		// Saying where to revoke (RFC 7009) is asking for superseded tokens
		// to be revoked; oauth2 has no revoke_old key of its own.
		cr.RevokeOld = true
	}
	cr.Params = c.params(path+".params", f.Params)
}

// scopes reads OAuth2 scopes: each one token, without spaces (RFC 6749).
func (c *checker) scopes(path string, list []*str) []string {
	var out []string
	for i, s := range list {
		if s.ok() && (s.v == "" || strings.ContainsAny(s.v, " \t")) {
			c.add(s.line, fmt.Sprintf("%s[%d]", path, i), "a scope is one word, without spaces")
		} else if s.ok() {
			out = append(out, s.v)
		}
	}
	return out
}

// params reads extra token-request parameters; those sidekey sets itself
// are refused, so a secret cannot slip in as a literal client_secret.
func (c *checker) params(path string, m map[string]*str) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, s := range m {
		switch {
		case slices.Contains(reservedParams, k):
			c.add(s.line, path, "%s is set by sidekey and cannot be given as a parameter", quote(k))
		case k == "":
			c.add(s.line, path, "a parameter name must not be empty")
		case s.ok():
			out[k] = s.v
		}
	}
	return out
}

func (c *checker) execFields(path string, f *fileCredential, cr *Credential) {
	c.positive(path+".timeout", f.Timeout, &cr.Timeout)
	if f.Command == nil {
		return
	}
	if len(f.Command) == 0 || !f.Command[0].ok() || strings.TrimSpace(f.Command[0].v) == "" {
		c.add(f.keys["command"], path+".command", "must name a program to run")
		return
	}
	for _, s := range f.Command {
		if s.ok() {
			cr.Command = append(cr.Command, s.v)
		}
	}
}

// lifetimeFields reads refresh_before and max_stale, which every source takes.
func (c *checker) lifetimeFields(path string, f *fileCredential, cr *Credential) {
	f.MaxStale.to(&cr.MaxStale)
	if !f.RefreshBefore.ok() {
		return
	}
	rb, err := parseRefreshBefore(f.RefreshBefore.v)
	if err != nil {
		c.add(f.RefreshBefore.line, path+".refresh_before", "%s %v", quote(f.RefreshBefore.v), err)
		return
	}
	cr.RefreshBefore = rb
}

// parseRefreshBefore reads a percentage of the lifetime ("33%", strictly
// between 0 and 100) or a duration ("2m", more than zero).
func parseRefreshBefore(s string) (RefreshBefore, error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil || !(p > 0 && p < 100) {
			return RefreshBefore{}, errors.New("is not a percentage between 0% and 100%")
		}
		return RefreshBefore{Fraction: p / 100}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return RefreshBefore{}, errors.New("is neither a percentage (33%) nor a duration (2m) above zero")
	}
	return RefreshBefore{Duration: d}, nil
}
