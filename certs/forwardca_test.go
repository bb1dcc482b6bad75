package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// oidNameConstraints is id-ce-nameConstraints.
var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

// newForwardCA builds a generated CA for hosts on the clock now (nil: the
// system clock).
func newForwardCA(t testing.TB, now func() time.Time, hosts ...string) *ForwardCA {
	t.Helper()
	ca, err := NewForwardCA(hosts, ForwardCAOptions{Now: now})
	if err != nil {
		t.Fatalf("NewForwardCA: %v", err)
	}
	t.Cleanup(ca.Close)
	return ca
}

func (ca *ForwardCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// forge signs a server certificate for the given names (DNS names, IP
// addresses, e-mail addresses with an @, URIs with ://) with the CA's key,
// bypassing Leaf's refusal.
func forge(t testing.TB, ca *ForwardCA, names ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(t),
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		SubjectKeyId: []byte{1, 2, 3, 4},
	}
	for _, n := range names {
		switch {
		case net.ParseIP(n) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(n))
		case strings.Contains(n, "://"):
			u, err := url.Parse(n)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		case strings.Contains(n, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, n)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.signer())
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verifyAt checks leaf against the CA alone with Go's verifier, with the
// name constraints and server-auth usage, but no host name.
func verifyAt(ca *ForwardCA, leaf *x509.Certificate) error {
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: ca.pool(), CurrentTime: ca.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

func TestForwardCAGenerated(t *testing.T) {
	clk := newFakeClock()
	tests := []struct {
		name              string
		hosts             []string
		dns               []string
		permitIP, exclude []string
	}{
		{"dns only", []string{"api.example.test", "Git.Example.Test."}, []string{"api.example.test", "git.example.test"}, nil, []string{"0.0.0.0/0", "::/0"}},
		{"dns and ip", []string{"api.example.test", "127.0.0.1", "[::1]"}, []string{"api.example.test"}, []string{"127.0.0.1/32", "::1/128"}, nil},
		{"ip only", []string{"10.1.2.3"}, []string{noDomain}, []string{"10.1.2.3/32"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newForwardCA(t, clk.Now, tt.hosts...)
			c := ca.Certificate()
			if !ca.Generated() {
				t.Error("Generated is false")
			}
			pub, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
			}
			if n := c.SerialNumber.BitLen(); n != 128 {
				t.Errorf("serial has %d bits, want 128", n)
			}
			if len(c.SubjectKeyId) != 20 {
				t.Errorf("SubjectKeyId = %x", c.SubjectKeyId)
			}
			if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("basic constraints: CA %v valid %v MaxPathLen %d zero %v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
			}
			if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("KeyUsage = %b", c.KeyUsage)
			}
			if want := clk.Now().Add(-clockSkew); !c.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %v, want %v", c.NotBefore, want)
			}
			if want := clk.Now().Add(DefaultCALifetime); !c.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %v, want %v", c.NotAfter, want)
			}
			i := slices.IndexFunc(c.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidNameConstraints) })
			if i < 0 || !c.Extensions[i].Critical || !c.PermittedDNSDomainsCritical {
				t.Fatalf("name constraints missing or not critical")
			}
			if got := slices.Sorted(slices.Values(c.PermittedDNSDomains)); !slices.Equal(got, tt.dns) {
				t.Errorf("permitted DNS = %v, want %v", got, tt.dns)
			}
			if got := nets(c.PermittedIPRanges); !slices.Equal(got, tt.permitIP) {
				t.Errorf("permitted IP = %v, want %v", got, tt.permitIP)
			}
			if got := nets(c.ExcludedIPRanges); !slices.Equal(got, tt.exclude) {
				t.Errorf("excluded IP = %v, want %v", got, tt.exclude)
			}
			if !slices.Equal(c.PermittedEmailAddresses, []string{noDomain}) || !slices.Equal(c.PermittedURIDomains, []string{noDomain}) {
				t.Errorf("permitted e-mail %v, URI %v", c.PermittedEmailAddresses, c.PermittedURIDomains)
			}
			if len(c.ExcludedDNSDomains)+len(c.ExcludedEmailAddresses)+len(c.ExcludedURIDomains) != 0 {
				t.Errorf("unexpected excluded names")
			}
			if b, _ := pem.Decode(ca.CertPEM()); b == nil || b.Type != "CERTIFICATE" || string(b.Bytes) != string(c.Raw) {
				t.Errorf("CertPEM is not the CA certificate")
			}
		})
	}
}

func nets(ns []*net.IPNet) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.String())
	}
	return out
}

// TestForwardCANameConstraints: leaves that Leaf mints verify; names it
// would not mint, signed with the CA's key directly, do not, because of
// the constraints and nothing else.
func TestForwardCANameConstraints(t *testing.T) {
	clk := newFakeClock()
	dnsOnly := newForwardCA(t, clk.Now, "api.example.test", "git.example.test")
	withIP := newForwardCA(t, clk.Now, "api.example.test", "127.0.0.1", "::1")
	ipOnly := newForwardCA(t, clk.Now, "10.1.2.3")

	for _, tt := range []struct {
		ca   *ForwardCA
		host string
	}{{dnsOnly, "api.example.test"}, {dnsOnly, "git.example.test"}, {withIP, "127.0.0.1"}, {withIP, "::1"}, {ipOnly, "10.1.2.3"}} {
		cert, err := tt.ca.Leaf(tt.host)
		if err != nil {
			t.Fatalf("Leaf(%s): %v", tt.host, err)
		}
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: tt.ca.pool(), CurrentTime: clk.Now(), DNSName: tt.host}); err != nil {
			t.Errorf("leaf for %s does not verify: %v", tt.host, err)
		}
	}

	tests := []struct {
		name  string
		ca    *ForwardCA
		names []string
		ok    bool
	}{
		{"intercepted name", dnsOnly, []string{"api.example.test"}, true},
		{"subdomain: RFC 5280 permits it, Leaf does not mint it", dnsOnly, []string{"deep.api.example.test"}, true},
		{"another name", dnsOnly, []string{"evil.test"}, false},
		{"parent domain", dnsOnly, []string{"example.test"}, false},
		{"sibling", dnsOnly, []string{"www.example.test"}, false},
		{"intercepted and another", dnsOnly, []string{"api.example.test", "evil.test"}, false},
		{"IPv4 when none intercepted", dnsOnly, []string{"10.0.0.1"}, false},
		{"IPv6 when none intercepted", dnsOnly, []string{"2001:db8::1"}, false},
		{"loopback when none intercepted", dnsOnly, []string{"127.0.0.1"}, false},
		{"intercepted IPv4", withIP, []string{"127.0.0.1"}, true},
		{"intercepted IPv6", withIP, []string{"::1"}, true},
		{"neighbouring IPv4", withIP, []string{"127.0.0.2"}, false},
		{"neighbouring IPv6", withIP, []string{"::2"}, false},
		{"IPv4 of another", withIP, []string{"10.1.2.3"}, false},
		{"e-mail address", dnsOnly, []string{"api.example.test", "admin@api.example.test"}, false},
		{"URI", dnsOnly, []string{"api.example.test", "https://api.example.test/"}, false},
		{"DNS name when only an IP is intercepted", ipOnly, []string{"api.example.test"}, false},
		{"any name when only an IP is intercepted", ipOnly, []string{"localhost"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyAt(tt.ca, forge(t, tt.ca, tt.names...))
			if tt.ok {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			var inv x509.CertificateInvalidError
			if !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
				t.Fatalf("Verify = %v, want a name-constraint violation", err)
			}
		})
	}
}

func TestForwardCARefusals(t *testing.T) {
	ca := newForwardCA(t, newFakeClock().Now, "api.example.test", "127.0.0.1", "::1")
	for _, host := range []string{
		"evil.test", "deep.api.example.test", "example.test", "api.example.test:443", "127.0.0.2",
		"", ".", "*.example.test", "api..example.test", "[127.0.0.1]", "::1%eth0", "api.example.test\x00",
		strings.Repeat("a", 300),
	} {
		if c, err := ca.Leaf(host); !errors.Is(err, ErrNotIntercepted) || c != nil {
			t.Errorf("Leaf(%q) = %v; want ErrNotIntercepted and no leaf", host, err)
		}
		if _, err := ca.TLSConfig(host); !errors.Is(err, ErrNotIntercepted) {
			t.Errorf("TLSConfig(%q) = %v; want ErrNotIntercepted", host, err)
		}
		if _, err := ca.GetCertificate(&tls.ClientHelloInfo{ServerName: host}); !errors.Is(err, ErrNotIntercepted) {
			t.Errorf("GetCertificate(%q) = %v; want ErrNotIntercepted", host, err)
		}
	}
	if n := ca.mints.Load(); n != 0 {
		t.Fatalf("%d leaves minted for refused hosts", n)
	}
	for host, want := range map[string]string{
		"api.example.test": "api.example.test", "API.Example.TEST.": "api.example.test",
		"127.0.0.1": "127.0.0.1", "::ffff:127.0.0.1": "127.0.0.1", "[::1]": "::1", "0:0::1": "::1",
	} {
		c, err := ca.Leaf(host)
		if err != nil {
			t.Fatalf("Leaf(%q): %v", host, err)
		}
		if got := subjects(c.Leaf); !slices.Contains(got, want) {
			t.Errorf("Leaf(%q) is for %v, want %s", host, got, want)
		}
	}
	if n := ca.mints.Load(); n != 3 {
		t.Errorf("%d leaves minted for 3 hosts in various spellings", n)
	}
}

func TestNewForwardCARefusals(t *testing.T) {
	good := newTestCA(t, "own CA")
	goodKey := pkcs8(t, good.key)
	tests := []struct {
		name  string
		hosts []string
		opts  ForwardCAOptions
	}{
		{"no host", nil, ForwardCAOptions{}},
		{"wildcard", []string{"*.example.test"}, ForwardCAOptions{}},
		{"host with port", []string{"api.example.test:443"}, ForwardCAOptions{}},
		{"IPv6 with zone", []string{"fe80::1%eth0"}, ForwardCAOptions{}},
		{"URL", []string{"https://api.example.test"}, ForwardCAOptions{}},
		{"negative lifetime", []string{"a.test"}, ForwardCAOptions{Lifetime: -time.Hour}},
		{"negative cache size", []string{"a.test"}, ForwardCAOptions{CacheSize: -1}},
		{"certificate without key", []string{"a.test"}, ForwardCAOptions{CertPEM: good.pem}},
		{"key without certificate", []string{"a.test"}, ForwardCAOptions{KeyPEM: goodKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ca, err := NewForwardCA(tt.hosts, tt.opts); err == nil {
				ca.Close()
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("error shows key material: %v", err)
			}
		})
	}
}

func pkcs8(t testing.TB, key crypto.PrivateKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
}

// makeCA makes a CA certificate for key, signed by parent (nil:
// self-signed), valid around now.
func makeCA(t testing.TB, cn string, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer, mod func(*x509.Certificate)) (*x509.Certificate, []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if mod != nil {
		mod(tmpl)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestForwardCALoad(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecCA, ecPEM := makeCA(t, "own EC CA", ecKey, nil, nil, nil)
	rsaCA, rsaPEM := makeCA(t, "own RSA CA", rsaKey, nil, nil, nil)
	edCA, edPEM := makeCA(t, "own Ed25519 CA", edKey, nil, nil, nil)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, interPEM := makeCA(t, "own intermediate", interKey, ecCA, ecKey, nil)
	rsaPKCS1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	ecSEC1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})

	good := []struct {
		name       string
		cert, key  []byte
		root       *x509.Certificate
		chainCerts int
	}{
		{"ECDSA, PKCS #8", ecPEM, pkcs8(t, ecKey), ecCA, 1},
		{"ECDSA, SEC 1", ecPEM, ecSEC1, ecCA, 1},
		{"RSA, PKCS #1", rsaPEM, rsaPKCS1, rsaCA, 1},
		{"Ed25519", edPEM, pkcs8(t, edKey), edCA, 1},
		{"intermediate with its root", append(slices.Clone(interPEM), ecPEM...), pkcs8(t, interKey), ecCA, 2},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			sec := &recordingSecrets{}
			ca, err := NewForwardCA([]string{"api.example.test"}, ForwardCAOptions{CertPEM: tt.cert, KeyPEM: tt.key, Secrets: sec})
			if err != nil {
				t.Fatalf("NewForwardCA: %v", err)
			}
			if ca.Generated() || !ca.Ready() {
				t.Errorf("Generated %v, Ready %v", ca.Generated(), ca.Ready())
			}
			if string(ca.CertPEM()) != string(tt.cert) {
				t.Errorf("CertPEM differs from the certificates given")
			}
			cert, err := ca.Leaf("api.example.test")
			if err != nil {
				t.Fatal(err)
			}
			if len(cert.Certificate) != tt.chainCerts {
				t.Errorf("chain of %d certificates, want %d (no self-signed root)", len(cert.Certificate), tt.chainCerts)
			}
			inter := x509.NewCertPool()
			for _, der := range cert.Certificate[1:] {
				c, _ := x509.ParseCertificate(der)
				inter.AddCert(c)
			}
			roots := x509.NewCertPool()
			roots.AddCert(tt.root)
			if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "api.example.test"}); err != nil {
				t.Errorf("leaf does not verify: %v", err)
			}
			if string(cert.Leaf.AuthorityKeyId) != string(ca.cert.SubjectKeyId) {
				t.Errorf("AKI %x, CA SKI %x", cert.Leaf.AuthorityKeyId, ca.cert.SubjectKeyId)
			}
			if !sec.has(string(tt.key)) {
				t.Error("the key's PEM is not registered")
			}
			ca.Close()
			if live := sec.live(); len(live) != 0 {
				t.Errorf("still registered after Close: %d values", len(live))
			}
			if _, err := ca.Leaf("api.example.test"); err == nil {
				t.Error("Leaf after Close succeeded")
			}
		})
	}

	leafCert, leafKey, _ := newTestCA(t, "other").issue(t, "leaf.test", false, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "leaf.test")
	_, notCAPEM := makeCA(t, "not a CA", ecKey, nil, nil, func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = false, false })
	_, caFalsePEM := makeCA(t, "CA:FALSE", ecKey, nil, nil, func(c *x509.Certificate) { c.IsCA = false })
	_, noSignPEM := makeCA(t, "no certSign", ecKey, nil, nil, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })
	_, expiredPEM := makeCA(t, "expired", ecKey, nil, nil, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	})
	ecKeyPEM := pkcs8(t, ecKey)
	bad := []struct {
		name      string
		cert, key []byte
		want      error
	}{
		{"mismatched key", ecPEM, pkcs8(t, rsaKey), ErrBadCertificate},
		{"another EC key", ecPEM, pkcs8(t, interKey), ErrBadCertificate},
		{"a server certificate", leafCert, leafKey, ErrBadCertificate},
		{"no basic constraints, certificate signing allowed", notCAPEM, ecKeyPEM, ErrBadCertificate},
		{"basic constraints CA:FALSE", caFalsePEM, ecKeyPEM, ErrBadCertificate},
		{"no certificate signing", noSignPEM, ecKeyPEM, ErrBadCertificate},
		{"expired", expiredPEM, ecKeyPEM, ErrCAExpired},
		{"garbage certificate", []byte("not a certificate"), ecKeyPEM, ErrBadCertificate},
		{"garbage key", ecPEM, []byte("-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZSBnYXJiYWdlIGdhcmJhZ2UK\n-----END PRIVATE KEY-----\n"), ErrBadCertificate}, // sidekey:allow-secret (garbage, not a key)
		{"inputs swapped", ecKeyPEM, ecPEM, ErrBadCertificate},
		{"key given twice", ecKeyPEM, ecKeyPEM, ErrBadCertificate},
		{"truncated certificate", ecPEM[:len(ecPEM)/2], ecKeyPEM, ErrBadCertificate},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			sec := &recordingSecrets{}
			ca, err := NewForwardCA([]string{"api.example.test"}, ForwardCAOptions{CertPEM: tt.cert, KeyPEM: tt.key, Secrets: sec})
			if err == nil {
				ca.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			for _, pemKey := range [][]byte{tt.key, tt.cert, ecKeyPEM} {
				for _, s := range keySecrets(pemKey) {
					if strings.Contains(err.Error(), s) {
						t.Fatalf("error shows key material: %v", err)
					}
				}
			}
			if live := sec.live(); len(live) != 0 {
				t.Errorf("a refused key stays registered")
			}
		})
	}
}

func TestForwardCAGeneratedRegistersNothing(t *testing.T) {
	sec := &recordingSecrets{}
	ca, err := NewForwardCA([]string{"api.example.test"}, ForwardCAOptions{Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	if _, err := ca.Leaf("api.example.test"); err != nil {
		t.Fatal(err)
	}
	if live := sec.live(); len(live) != 0 {
		t.Fatalf("registered %d values for a generated CA", len(live))
	}
}

func TestForwardCAInfo(t *testing.T) {
	clk := newFakeClock()
	ca := newForwardCA(t, clk.Now, "api.example.test")
	b, err := json.Marshal(ca.Info())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"forward_proxy.ca","kind":"forward-ca","subjects":["sidekey forward-proxy CA"],` +
		`"issuer":"CN=sidekey forward-proxy CA,O=sidekey","serial":"` + formatSerial(ca.cert.SerialNumber) +
		`","not_before":"2029-12-31T23:00:00Z","not_after":"2030-01-31T00:00:00Z"}`
	if string(b) != want {
		t.Fatalf("Info = %s\nwant   %s", b, want)
	}
	named, err := NewForwardCA([]string{"a.test"}, ForwardCAOptions{Name: "proxy-ca"})
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	if i := named.Info(); i.Name != "proxy-ca" || i.Kind != KindForwardCA {
		t.Fatalf("Info = %+v", i)
	}
}

func TestCanonicalHost(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"api.example.test", "api.example.test", true},
		{"API.Example.Test.", "api.example.test", true},
		{"under_score.test", "under_score.test", true},
		{"localhost", "localhost", true},
		{"127.0.0.1", "127.0.0.1", true},
		{"127.0.0.1.", "127.0.0.1", true},
		{"::FFFF:10.0.0.1", "10.0.0.1", true},
		{"[2001:DB8::1]", "2001:db8::1", true},
		{"2001:db8:0:0::1", "2001:db8::1", true},
		{"", "", false},
		{".", "", false},
		{"..", "", false},
		{"[127.0.0.1]", "", false},
		{"[api.test]", "", false},
		{"fe80::1%eth0", "", false},
		{"api.test:443", "", false},
		{"*.api.test", "", false},
		{"-api.test", "", false},
		{"api-.test", "", false},
		{"a..test", "", false},
		{"1.2.3", "", false},
		{"1.2.3.4.5", "", false},
		{"ápi.test", "", false},
		{strings.Repeat("a", 64) + ".test", "", false},
		{strings.Repeat("a.", 127) + "aa", "", false},
	}
	for _, tt := range tests {
		got, ok := canonicalHost(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("canonicalHost(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzCanonicalHost(f *testing.F) {
	for _, s := range []string{"api.example.test", "API.test.", "[::1]", "::ffff:1.2.3.4", "1.2.3.4", "a..b", "x:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := canonicalHost(s)
		if !ok {
			return
		}
		if k2, ok2 := canonicalHost(k); !ok2 || k2 != k {
			t.Fatalf("canonicalHost(%q) = %q, which is not canonical (%q, %v)", s, k, k2, ok2)
		}
		if strings.ContainsAny(k, "[]%* /\x00") || strings.HasSuffix(k, ".") || k != strings.ToLower(k) {
			t.Fatalf("canonicalHost(%q) = %q", s, k)
		}
	})
}
