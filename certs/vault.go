package certs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"
)

// Vault runs fn with an authenticated Vault API client. *injector.VaultClient
// implements it (waiting for its first login, and logging in again and
// retrying once when a call is refused with 403); VaultAPI adapts a plain
// client. fn must not keep the client.
type Vault interface {
	Do(ctx context.Context, fn func(*vaultapi.Client) error) error
}

// VaultAPI adapts a plain Vault client that already carries its token.
func VaultAPI(c *vaultapi.Client) Vault { return apiVault{c} }

type apiVault struct{ c *vaultapi.Client }

func (v apiVault) Do(_ context.Context, fn func(*vaultapi.Client) error) error { return fn(v.c) }

// kvPaths splits a KV v2 path as written in the configuration into its
// mount and the prefix below it: "secret/data/sidekey/acme" and
// "secret/sidekey/acme" both give ("secret", "sidekey/acme"). Mounts of more
// than one segment must be written with their data/ segment.
func kvPaths(p string) (mount, prefix string, err error) {
	p = strings.Trim(p, "/")
	if m, ok := strings.CutSuffix(p, "/data"); ok {
		mount = m
	} else if m, rest, ok := strings.Cut(p, "/data/"); ok {
		mount, prefix = m, rest
	} else if m, rest, ok := strings.Cut(p, "/"); ok {
		mount, prefix = m, rest
	} else {
		mount = p
	}
	prefix = strings.Trim(prefix, "/")
	if mount == "" || strings.Contains(prefix, "//") {
		return "", "", fmt.Errorf("vault storage path %q: want MOUNT/data/PREFIX", p)
	}
	return mount, prefix, nil
}

// vaultStatus reports whether err is a Vault answer with the given status.
func vaultStatus(err error, status int) bool {
	var re *vaultapi.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

// isCASMismatch reports whether err is KV v2 refusing a write whose
// check-and-set version is not the current one.
func isCASMismatch(err error) bool {
	var re *vaultapi.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 400 {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "check-and-set") {
			return true
		}
	}
	return strings.Contains(err.Error(), "check-and-set")
}

// number reads a JSON number the Vault client decoded (json.Number, or a
// float64 or int from a client that did not use UseNumber).
func number(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		return int64(n), true
	case int:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}
