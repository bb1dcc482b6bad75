package config

var (
	authMethods = []string{"token", "approle", "kubernetes"}
	authKeys    = map[string]keySet{
		"token":      {uses: []string{"token"}, needs: []string{"token"}},
		"approle":    {uses: []string{"role_id", "secret_id"}, needs: []string{"role_id", "secret_id"}},
		"kubernetes": {uses: []string{"role", "jwt"}, needs: []string{"role"}},
	}
)

func (c *checker) vault(f *fileVault) *Vault {
	if f == nil {
		return nil
	}
	v := &Vault{}
	if c.httpURL("vault.address", f.Address) != nil {
		v.Address = f.Address.v
	}
	c.nonEmpty("vault.ca_cert", f.CACert, &v.CACert)
	f.Namespace.to(&v.Namespace)
	if c.require(&f.meta, "vault", "auth") {
		v.Auth = c.vaultAuth(f.Auth)
	}
	return v
}

// vaultAuth reads the auth method and the fields it takes. Its secrets are
// references that cannot point into Vault: they are how sidekey logs in.
func (c *checker) vaultAuth(f *fileVaultAuth) VaultAuth {
	var method string
	if !c.require(&f.meta, "vault.auth", "method") || !c.oneOf("vault.auth.method", f.Method, &method, authMethods) {
		return VaultAuth{}
	}
	a := newVaultAuth(method)
	c.checkKeys(&f.meta, "vault.auth", "method "+method, authKeys[method], "method", "mount")
	c.nonEmpty("vault.auth.mount", f.Mount, &a.Mount)
	c.nonEmpty("vault.auth.role", f.Role, &a.Role)
	a.Token = c.loginRef("vault.auth.token", f.Token, a.Token)
	a.RoleID = c.loginRef("vault.auth.role_id", f.RoleID, a.RoleID)
	a.SecretID = c.loginRef("vault.auth.secret_id", f.SecretID, a.SecretID)
	a.JWT = c.loginRef("vault.auth.jwt", f.JWT, a.JWT)
	return a
}

// loginRef reads a reference used to log in to Vault, or keeps def.
func (c *checker) loginRef(path string, s *str, def *Ref) *Ref {
	if s == nil {
		return def
	}
	if r, err := ParseRef(s.v); s.ok() && err == nil && r.Kind == RefVault {
		c.add(s.line, path, "cannot be a vault: reference: it is needed to log in to vault")
		return nil
	}
	return c.ref(path, s)
}
