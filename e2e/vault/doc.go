// Package vaulte2e runs sidekey's Vault client and sources against a real
// Vault core running in-process (the hashicorp/vault test cluster): AppRole
// login and token renewal, KV v2 rotation, PKI leases renewed, replaced and
// revoked once released, and a sealed Vault that the credentials outlive
// until their own expiry.
//
// The Vault server module is only ever imported here, in the e2e module's
// tests, never by the sidekey binary. Run it from the e2e directory:
//
//	go test -race -count=1 ./vault/
package vaulte2e
