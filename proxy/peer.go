package proxy

import (
	"crypto/tls"
	"slices"

	"github.com/sidekey/sidekey/config"
)

// connIdentity is what a connection itself says about its peer: the uid
// of a unix-socket peer, a verified client certificate. The app-facing
// listener's connections implement it; others may not.
type connIdentity interface {
	peerUID() (uint32, bool)
	peerCert() *certIdentity // nil without a verified client certificate
}

// certIdentity is the names of a verified client certificate, read once
// per connection.
type certIdentity struct {
	uris []string
	dns  []string
	cn   string
}

// newCertIdentity reads the leaf of a verified client certificate chain;
// nil when the peer sent none (or it was not verified).
func newCertIdentity(cs tls.ConnectionState) *certIdentity {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	id := &certIdentity{dns: leaf.DNSNames, cn: leaf.Subject.CommonName}
	for _, u := range leaf.URIs {
		id.uris = append(id.uris, u.String())
	}
	return id
}

// matches reports whether the certificate has the name m asks for.
func (id *certIdentity) matches(m config.CertMatch) bool {
	switch {
	case m.URI != "":
		return slices.Contains(id.uris, m.URI)
	case m.DNS != "":
		return slices.ContainsFunc(id.dns, func(d string) bool { return equalFoldASCII(d, m.DNS) })
	case m.CN != "":
		return id.cn == m.CN
	}
	return false
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
