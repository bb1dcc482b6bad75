package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// leafEntry is one cached leaf and when it is due for reissue.
type leafEntry struct {
	cert      *tls.Certificate // Leaf set
	notBefore time.Time
	renewAt   time.Time // a third of its life before NotAfter, or NotAfter when it ends with the CA
}

// fresh reports whether the leaf may still be served at now.
func (e *leafEntry) fresh(now time.Time) bool {
	return !now.Before(e.notBefore) && now.Before(e.renewAt)
}

// Leaf returns the leaf certificate for host (an intercepted host, as the
// CONNECT request or the Host header names it, without a port), with Leaf
// set and the CA's issuers, if any, after it. A cached leaf is returned
// while more than a third of its life is left; otherwise, and on a cache
// miss, one is minted, once however many callers ask for it at the same
// time. A host that is not intercepted is refused with ErrNotIntercepted,
// and a CA outside its validity with ErrCAExpired. A cached call does not
// allocate.
func (ca *ForwardCA) Leaf(host string) (*tls.Certificate, error) {
	key, err := ca.admit(host)
	if err != nil {
		return nil, err
	}
	return ca.leaf(key)
}

// GetCertificate is a tls.Config.GetCertificate callback: Leaf for the
// client's server name (SNI). A ClientHello without one, as clients send
// for an IP address, is refused: use TLSConfig with the CONNECT host then.
func (ca *ForwardCA) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		return nil, fmt.Errorf("no server name (SNI) in the client hello: %w", ErrNotIntercepted)
	}
	return ca.Leaf(hello.ServerName)
}

// TLSConfig returns a tls.Config for one intercepted connection to host
// (the CONNECT host): it serves Leaf(host), or refuses the handshake when
// the client's server name, if it sends one, names another host. It offers
// "http/1.1" by ALPN; the caller may set NextProtos (e.g. "h2" first) and
// anything else before the handshake. The minimum version is TLS 1.2. A
// host that is not intercepted is refused at once with ErrNotIntercepted.
func (ca *ForwardCA) TLSConfig(host string) (*tls.Config, error) {
	key, err := ca.admit(host)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if sni := hello.ServerName; sni != "" && sni != key {
				if k, _ := canonicalHost(sni); k != key {
					return nil, fmt.Errorf("server name %s does not match the tunnel's host %s", quoteHost(sni), quoteHost(key))
				}
			}
			return ca.leaf(key)
		},
	}, nil
}

// admit returns host's cache key if it is intercepted. Host names already
// in canonical form are looked up without allocating.
func (ca *ForwardCA) admit(host string) (string, error) {
	if _, ok := ca.hosts[host]; ok {
		return host, nil
	}
	if key, ok := canonicalHost(host); ok {
		if _, ok := ca.hosts[key]; ok {
			return key, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNotIntercepted, quoteHost(host))
}

// leaf returns the fresh cached leaf for an admitted key, or mints one.
func (ca *ForwardCA) leaf(key string) (*tls.Certificate, error) {
	if e, ok := ca.cache.Get(key); ok && e.fresh(ca.now()) && !ca.closed.Load() {
		return e.cert, nil
	}
	return ca.mintShared(key)
}

// mintShared mints the leaf for key once for all concurrent callers; a
// caller that arrives just after a mint finds its result in the cache.
func (ca *ForwardCA) mintShared(key string) (*tls.Certificate, error) {
	v, err, _ := ca.flight.Do(key, func() (any, error) {
		now := ca.now()
		if err := ca.valid(now); err != nil {
			return nil, err
		}
		if e, ok := ca.cache.Peek(key); ok && e.fresh(now) {
			return e, nil
		}
		e, err := ca.mint(key, now)
		if err != nil {
			return nil, err
		}
		ca.cache.Add(key, e)
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*leafEntry).cert, nil
}

// mint issues a leaf for key at now: a fresh ECDSA P-256 key, a DNS or IP
// SAN (and the DNS name as CN), server-auth usage, SKI and AKI, valid from
// a little before now (not before the CA) for the leaf lifetime, cut at
// the CA's NotAfter.
func (ca *ForwardCA) mint(key string, now time.Time) (*leafEntry, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("minting a leaf for %s: %w", key, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ski, err := keyID(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		NotBefore:      later(now.Add(-clockSkew), ca.cert.NotBefore),
		NotAfter:       earlier(now.Add(ca.leafLife), ca.cert.NotAfter),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		SubjectKeyId:   ski,
		AuthorityKeyId: ca.aki, // used only when the CA has no SubjectKeyId
	}
	if a, err := netip.ParseAddr(key); err == nil {
		// No CN: OpenSSL checks a CN that looks like a DNS name against
		// the DNS constraints. The SAN is then marked critical.
		tmpl.IPAddresses = []net.IP{a.AsSlice()}
	} else {
		tmpl.Subject = pkix.Name{CommonName: key}
		tmpl.DNSNames = []string{key}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &priv.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("minting a leaf for %s: %w", key, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("minting a leaf for %s: %w", key, err)
	}
	ca.mints.Add(1)
	chain := make([][]byte, 0, 1+len(ca.chain))
	chain = append(append(chain, der), ca.chain...)
	e := &leafEntry{
		cert:      &tls.Certificate{Certificate: chain, PrivateKey: priv, Leaf: leaf},
		notBefore: leaf.NotBefore,
		renewAt:   leaf.NotAfter,
	}
	if leaf.NotAfter.Before(ca.cert.NotAfter) {
		// A leaf that ends with the CA is kept to the end: a new one could
		// not last longer.
		e.renewAt = leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3)
	}
	return e, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
