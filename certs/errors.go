package certs

import "errors"

// Sentinel errors. Classify with errors.Is; the errors returned wrap them
// with what was being done. No error ever contains key material.
var (
	// ErrNotReady: a certificate is asked for before one was obtained.
	ErrNotReady = errors.New("certificate not available yet")
	// ErrNoVault: Vault storage or the vault-pki source was configured but
	// no Vault client was given.
	ErrNoVault = errors.New("no vault client")
	// ErrBadCertificate: a certificate or key could not be used (does not
	// parse, the key does not match, no PEM block found).
	ErrBadCertificate = errors.New("unusable certificate")
	// ErrNotLocked: Unlock of a lock that this storage does not hold.
	ErrNotLocked = errors.New("lock not held")

	errNoAnswer = errors.New("no answer")
)
