package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Defaults of ForwardCAOptions.
const (
	// DefaultCALifetime is how long a generated CA is valid. sidekey
	// normally runs far shorter; a process that outlives its CA stops
	// intercepting (Ready turns false) until it is restarted.
	DefaultCALifetime = 30 * 24 * time.Hour
	// DefaultLeafLifetime is how long a leaf certificate is valid at most;
	// it is reissued when a third of its life is left.
	DefaultLeafLifetime = 24 * time.Hour
	// DefaultLeafCacheSize bounds the leaves held at once.
	DefaultLeafCacheSize = 1000
	// DefaultForwardCAName names the CA in Info.
	DefaultForwardCAName = "forward_proxy.ca"
)

// clockSkew is how far NotBefore is moved into the past, so that a client
// whose clock is a little behind accepts a certificate made just now.
const clockSkew = time.Hour

// forwardCACommonName is the subject of a generated CA.
const forwardCACommonName = "sidekey forward-proxy CA"

// noDomain is the only DNS name, mailbox domain and URI host a generated
// CA permits where nothing else may be: the top-level domain RFC 6761
// reserves as never resolving. An empty permitted list would permit every
// name, and an empty excluded name (which would match all) is read
// differently by different verifiers; a permitted .invalid fails closed.
const noDomain = "invalid"

// Errors of the forward-proxy CA, besides ErrBadCertificate for a CA that
// cannot be loaded.
var (
	// ErrNotIntercepted: a leaf is asked for a host that is not one of the
	// intercepted hosts. Nothing is minted.
	ErrNotIntercepted = errors.New("host is not intercepted")
	// ErrCAExpired: the CA is past its NotAfter (or before its NotBefore),
	// so no leaf it signs would be trusted.
	ErrCAExpired = errors.New("forward-proxy CA expired or not yet valid")

	errCAClosed = errors.New("forward-proxy CA closed")
)

// ForwardCAOptions are the optional parts of a ForwardCA; their zero
// values are useful.
type ForwardCAOptions struct {
	// Name names the CA in Info; "" is DefaultForwardCAName.
	Name string
	// CertPEM and KeyPEM are a CA of the caller's own (forward_proxy.ca.cert
	// and .key, already resolved): the CA certificate, optionally followed
	// by the certificates that issued it, and its private key (PKCS #8,
	// PKCS #1 or SEC 1; ECDSA, RSA or Ed25519). Give both or neither;
	// neither generates a CA in memory.
	CertPEM, KeyPEM []byte
	// Lifetime is a generated CA's validity; zero is DefaultCALifetime. A
	// loaded CA keeps its own.
	Lifetime time.Duration
	// LeafLifetime is a leaf's validity at most; zero is
	// DefaultLeafLifetime. A leaf never outlives the CA.
	LeafLifetime time.Duration
	// CacheSize bounds the leaves held (least recently used go first);
	// zero is DefaultLeafCacheSize.
	CacheSize int
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Secrets is told of a loaded CA's private key (its PEM and the lines
	// of its body) until Close. A generated key has no PEM and is never
	// registered or encoded anywhere.
	Secrets SecretSet
}

// ForwardCA is the certificate authority of the forward-proxy mode: it
// mints, caches and renews the leaf certificates with which intercepted
// TLS connections are terminated, one per host, for the intercepted hosts
// only.
//
// A generated CA (ECDSA P-256, key only in memory) carries critical name
// constraints that limit it to the intercepted hosts: their DNS names (and,
// as RFC 5280 defines a dNSName constraint, the names below them), exactly
// their IP addresses (or no IP address at all), and no e-mail address or
// URI. Go and OpenSSL (so Python, and curl and git built on it) enforce a
// root's constraints, as the tests show; for a verifier that ignores them
// on a trust anchor (RFC 5280 leaves that open) the only bound is what
// ForwardCA agrees to mint. A loaded CA has no constraints imposed: it
// vouches for whatever its owner made it vouch for, so ForwardCA's own
// refusal is the only limit there.
//
// Leaves are minted for exactly the intercepted hosts, never for a
// subdomain of one although a generated CA's constraints would allow it:
// routes match their host exactly, so no intercepted connection needs one.
//
// All methods are safe for concurrent use.
type ForwardCA struct {
	name      string
	generated bool
	cert      *x509.Certificate // the CA
	certPEM   []byte            // cert_out: the CA and the issuers given with it
	chain     [][]byte          // sent after each leaf: the given CAs that are not self-issued
	key       crypto.Signer
	aki       []byte // leaves' AuthorityKeyId when the CA has no SubjectKeyId
	hosts     map[string]struct{}
	leafLife  time.Duration
	now       func() time.Time

	cache  *lru.Cache[string, *leafEntry]
	flight singleflight.Group
	mints  atomic.Uint64 // leaves minted, for tests

	secrets   SecretSet
	reg       []string // what was added to secrets
	closed    atomic.Bool
	closeOnce sync.Once
}

// NewForwardCA builds the CA for the given intercepted hosts (the route
// hosts: DNS names or IP literals; case, one trailing dot and IPv6
// brackets do not matter). It generates a CA, or loads opts.CertPEM and
// opts.KeyPEM: the key must match the certificate, which must be a CA
// (basic constraints CA:TRUE, and certificate signing in its key usage if
// it has one) valid now. No error contains key material.
func NewForwardCA(hosts []string, opts ForwardCAOptions) (*ForwardCA, error) {
	ca := &ForwardCA{
		name: opts.Name, leafLife: opts.LeafLifetime, now: opts.Now,
		hosts: make(map[string]struct{}, len(hosts)), secrets: opts.Secrets,
	}
	if err := ca.defaults(opts); err != nil {
		return nil, err
	}
	for _, h := range hosts {
		key, ok := canonicalHost(h)
		if !ok {
			return nil, fmt.Errorf("forward-proxy CA: %s is not a host name or IP address", quoteHost(h))
		}
		ca.hosts[key] = struct{}{}
	}
	if len(ca.hosts) == 0 {
		return nil, errors.New("forward-proxy CA: no host to intercept")
	}
	var err error
	switch {
	case len(opts.CertPEM) == 0 && len(opts.KeyPEM) == 0:
		err = ca.generate(opts.Lifetime)
	case len(opts.CertPEM) == 0 || len(opts.KeyPEM) == 0:
		err = fmt.Errorf("forward-proxy CA: %w: a certificate and a key are needed, or neither", ErrBadCertificate)
	default:
		err = ca.load(opts.CertPEM, opts.KeyPEM)
	}
	if err != nil {
		return nil, err
	}
	if len(ca.cert.SubjectKeyId) == 0 {
		if ca.aki, err = keyID(ca.cert.PublicKey); err != nil {
			return nil, fmt.Errorf("forward-proxy CA: %w", err)
		}
	}
	if ca.secrets != nil && !ca.generated {
		ca.reg = keySecrets(opts.KeyPEM)
		ca.secrets.Add(ca.reg...)
	}
	return ca, nil
}

// defaults fills in the zero options and refuses negative ones.
func (ca *ForwardCA) defaults(opts ForwardCAOptions) error {
	if opts.Lifetime < 0 || opts.LeafLifetime < 0 || opts.CacheSize < 0 {
		return errors.New("forward-proxy CA: lifetimes and the cache size cannot be negative")
	}
	if ca.name == "" {
		ca.name = DefaultForwardCAName
	}
	if ca.leafLife == 0 {
		ca.leafLife = DefaultLeafLifetime
	}
	if ca.now == nil {
		ca.now = time.Now
	}
	size := opts.CacheSize
	if size == 0 {
		size = DefaultLeafCacheSize
	}
	var err error
	ca.cache, err = lru.New[string, *leafEntry](size)
	return err
}

// generate makes an ECDSA P-256 CA constrained to ca.hosts, valid from a
// little before now for lifetime (zero: DefaultCALifetime).
func (ca *ForwardCA) generate(lifetime time.Duration) error {
	if lifetime == 0 {
		lifetime = DefaultCALifetime
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating the forward-proxy CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	ski, err := keyID(&key.PublicKey)
	if err != nil {
		return err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: forwardCACommonName, Organization: []string{"sidekey"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
	}
	ca.constrain(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("signing the forward-proxy CA: %w", err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		return fmt.Errorf("parsing the forward-proxy CA: %w", err)
	}
	ca.key, ca.generated = key, true
	ca.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return nil
}

// constrain sets critical name constraints that permit exactly the
// intercepted DNS names (and, per RFC 5280, the names below them) and IP
// addresses, and no other name of any type x509 knows: with no DNS host,
// only noDomain; with no IP host, no IPv4 or IPv6 address at all; no
// mailbox or URI outside noDomain.
func (ca *ForwardCA) constrain(tmpl *x509.Certificate) {
	tmpl.PermittedDNSDomainsCritical = true
	for _, h := range slices.Sorted(maps.Keys(ca.hosts)) { // in a stable order, certificate after certificate
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.PermittedIPRanges = append(tmpl.PermittedIPRanges, &net.IPNet{
				IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen()),
			})
		} else {
			tmpl.PermittedDNSDomains = append(tmpl.PermittedDNSDomains, h)
		}
	}
	if len(tmpl.PermittedDNSDomains) == 0 {
		tmpl.PermittedDNSDomains = []string{noDomain}
	}
	if len(tmpl.PermittedIPRanges) == 0 {
		tmpl.ExcludedIPRanges = []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		}
	}
	tmpl.PermittedEmailAddresses = []string{noDomain}
	tmpl.PermittedURIDomains = []string{noDomain}
}

// load takes a CA certificate (and the certificates after it) and its key
// from PEM, and checks that they can sign leaves now.
func (ca *ForwardCA) load(certPEM, keyPEM []byte) error {
	fail := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("loading the forward-proxy CA: %w: %s: %w", ErrBadCertificate, what, err)
		}
		return fmt.Errorf("loading the forward-proxy CA: %w: %s", ErrBadCertificate, what)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fail("certificate and key", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return fail("the key cannot sign", nil)
	}
	var certs []*x509.Certificate
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fail("certificate", err)
		}
		certs = append(certs, c)
	}
	c := certs[0]
	switch now := ca.now(); {
	case !c.BasicConstraintsValid || !c.IsCA:
		return fail("the certificate is not a CA (basic constraints CA:TRUE)", nil)
	case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
		return fail("the certificate's key usage does not allow signing certificates", nil)
	case now.Before(c.NotBefore) || !now.Before(c.NotAfter):
		return fmt.Errorf("loading the forward-proxy CA: %w (valid %s to %s)", ErrCAExpired,
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	var out bytes.Buffer
	for _, x := range certs {
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})
		if !bytes.Equal(x.RawSubject, x.RawIssuer) {
			ca.chain = append(ca.chain, x.Raw)
		}
	}
	ca.cert, ca.key, ca.certPEM = c, signer, out.Bytes()
	return nil
}

// Certificate returns the CA certificate. The caller must not modify it.
func (ca *ForwardCA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns what cert_out holds: the CA certificate in PEM (for a
// loaded CA, followed by the certificates given after it). Never a key.
func (ca *ForwardCA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Generated reports whether the CA was generated in memory (and so is
// name-constrained) rather than loaded.
func (ca *ForwardCA) Generated() bool { return ca.generated }

// Info describes the CA for the admin API (kind "forward-ca").
func (ca *ForwardCA) Info() Info { return leafInfo(ca.name, KindForwardCA, ca.cert) }

// Ready reports whether the CA can mint trusted leaves now: it is within
// its validity and not closed.
func (ca *ForwardCA) Ready() bool { return ca.valid(ca.now()) == nil }

// Err says why Ready is false; nil when it is true.
func (ca *ForwardCA) Err() error { return ca.valid(ca.now()) }

// valid checks that the CA may sign at now.
func (ca *ForwardCA) valid(now time.Time) error {
	if ca.closed.Load() {
		return errCAClosed
	}
	if now.Before(ca.cert.NotBefore) || !now.Before(ca.cert.NotAfter) {
		return fmt.Errorf("%w: valid until %s", ErrCAExpired, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Close drops the cached leaves and removes the loaded key from the
// SecretSet. Call it once the CA is replaced or no longer served; after
// Close, no leaf is handed out. Close is idempotent.
func (ca *ForwardCA) Close() {
	ca.closeOnce.Do(func() {
		ca.closed.Store(true)
		ca.cache.Purge()
		if ca.secrets != nil && len(ca.reg) > 0 {
			ca.secrets.Remove(ca.reg...)
		}
	})
}

// signer is the CA's private key, for tests that forge certificates.
func (ca *ForwardCA) signer() crypto.Signer { return ca.key }

// randomSerial draws a 128-bit serial number: 127 random bits under a set
// top bit, so that it always has 128 bits and is positive.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("drawing a serial number: %w", err)
	}
	b[0] |= 0x80
	return new(big.Int).SetBytes(b[:]), nil
}

// keyID is a key identifier for pub as RFC 7093 section 2 method 1 makes
// it: the leftmost 160 bits of the SHA-256 of the subjectPublicKey bits.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding a public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("encoding a public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// canonicalHost returns host as the intercepted set and the leaf cache
// know it: lower case, without one trailing dot or IPv6 brackets, an IP
// address in its canonical form (an IPv4-mapped IPv6 address as IPv4). It
// reports false for anything else: a port, a zone, a wildcard, a character
// a host name cannot have. It allocates only for an IP address or a name
// with upper-case letters.
func canonicalHost(host string) (string, bool) {
	h := strings.TrimSuffix(host, ".")
	bracketed := len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']'
	if bracketed {
		h = h[1 : len(h)-1]
	}
	if bracketed || strings.IndexByte(h, ':') >= 0 || strings.Trim(h, "0123456789.") == "" {
		a, err := netip.ParseAddr(h)
		if err != nil || a.Zone() != "" || (bracketed && !a.Is6()) {
			return "", false
		}
		return a.Unmap().String(), true
	}
	h = strings.ToLower(h)
	if len(h) == 0 || len(h) > 253 {
		return "", false
	}
	for rest := h; ; {
		label, after, more := strings.Cut(rest, ".")
		if !validLabel(label) {
			return "", false
		}
		if !more {
			return h, true
		}
		rest = after
	}
}

// validLabel reports whether l is one label of a host name: 1 to 63 of
// a-z, 0-9, '-' and '_' (which some internal names use), not starting or
// ending with '-'.
func validLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// quoteHost renders a host that came from a client for an error: quoted,
// and cut short.
func quoteHost(h string) string {
	const max = 80
	if len(h) > max {
		h = h[:max] + "..."
	}
	return fmt.Sprintf("%q", h)
}
