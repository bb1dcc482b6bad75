package certs

import (
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"slices"
	"strings"
	"time"
)

// Kinds an Info reports.
const (
	KindInbound   = "inbound"
	KindClient    = "client"
	KindForwardCA = "forward-ca"
)

// Info describes one certificate for the admin API (GET /v1/certificates).
// It holds no key material. While no certificate is held, Issuer and
// Serial are empty and the times are left out of the JSON.
type Info struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"` // inbound | client | forward-ca
	Subjects  []string  `json:"subjects"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// leafInfo fills an Info from a parsed certificate.
func leafInfo(name, kind string, leaf *x509.Certificate) Info {
	return Info{
		Name:      name,
		Kind:      kind,
		Subjects:  subjects(leaf),
		Issuer:    leaf.Issuer.String(),
		Serial:    formatSerial(leaf.SerialNumber),
		NotBefore: leaf.NotBefore.UTC(),
		NotAfter:  leaf.NotAfter.UTC(),
	}
}

// subjects lists the names a certificate is for: its DNS names, IP
// addresses, URIs and e-mail addresses, or its common name when it has none
// of those (a client certificate often has only a CN).
func subjects(leaf *x509.Certificate) []string {
	out := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	for _, u := range leaf.URIs {
		out = append(out, u.String())
	}
	out = append(out, leaf.EmailAddresses...)
	if cn := leaf.Subject.CommonName; cn != "" && !slices.Contains(out, cn) {
		out = append([]string{cn}, out...)
	}
	return out
}

// formatSerial renders a serial number as Vault and OpenSSL users read it:
// lower-case hex bytes separated by colons, e.g. "3a:0f:9c".
func formatSerial(n *big.Int) string {
	if n == nil {
		return ""
	}
	b := n.Bytes()
	if len(b) == 0 {
		b = []byte{0}
	}
	h := hex.EncodeToString(b)
	var sb strings.Builder
	sb.Grow(len(h) + len(h)/2)
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}
