package certs

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// CAPool reads a PEM bundle of CA certificates from a file: or env:
// reference, for pinning an upstream's CA (upstream_tls.ca) or trusting a
// private ACME CA (tls.acme.ca_roots). The pool holds only these CAs, not
// the system roots. A bundle without a certificate is an error.
func CAPool(ref config.Ref) (*x509.CertPool, error) {
	pem, err := injector.Resolve(context.Background(), ref)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return nil, fmt.Errorf("CA bundle %s: %w: no PEM certificate found", ref, ErrBadCertificate)
	}
	return pool, nil
}
