package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// issue asks Vault's PKI engine for a certificate: a write of common_name
// (and ttl when set) to the configured path, pki/issue/ROLE. The
// certificate is followed by the CA chain Vault returns, without
// self-signed roots, so a server that trusts only the root can verify it.
func (c *ClientCert) issue(ctx context.Context) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, issueTimeout)
	defer cancel()
	data := map[string]any{"common_name": c.cfg.CommonName}
	if c.cfg.TTL > 0 {
		data["ttl"] = fmt.Sprintf("%ds", int64(c.cfg.TTL/time.Second))
	}
	var sec *vaultapi.Secret
	err := c.vault.Do(ctx, func(cl *vaultapi.Client) (err error) {
		sec, err = cl.Logical().WriteWithContext(ctx, c.cfg.Path, data)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("issuing from %s: %w", c.cfg.Path, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("issuing from %s: %w", c.cfg.Path, errNoAnswer)
	}
	certPEM, _ := sec.Data["certificate"].(string)
	keyPEM, _ := sec.Data["private_key"].(string)
	if certPEM == "" || keyPEM == "" {
		return nil, fmt.Errorf("issuing from %s: the answer has no certificate and private_key", c.cfg.Path)
	}
	chain := withChain([]byte(certPEM), caChain(sec.Data))
	cert, err := c.keyPair(chain, []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("issuing from %s: %w", c.cfg.Path, err)
	}
	return cert, nil
}

// caChain returns the CA certificates (PEM) of a pki/issue answer:
// ca_chain, else issuing_ca.
func caChain(data map[string]any) []string {
	var out []string
	if list, ok := data["ca_chain"].([]any); ok {
		for _, v := range list {
			if s, ok := v.(string); ok && s != "" {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		if s, ok := data["issuing_ca"].(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// withChain appends the intermediate CAs of chain to the leaf PEM,
// leaving out self-signed roots and anything that does not parse.
func withChain(leaf []byte, chain []string) []byte {
	var b bytes.Buffer
	b.Write(bytes.TrimSpace(leaf))
	b.WriteByte('\n')
	for _, s := range chain {
		rest := []byte(s)
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			ca, err := x509.ParseCertificate(blk.Bytes)
			if err != nil || isSelfSigned(ca) || strings.Contains(b.String(), string(pem.EncodeToMemory(blk))) {
				continue
			}
			b.Write(pem.EncodeToMemory(blk))
		}
	}
	return b.Bytes()
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
