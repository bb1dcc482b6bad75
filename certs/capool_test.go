package certs

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
)

func TestCAPool(t *testing.T) {
	ca := newTestCA(t, "pinned upstream CA")
	other := newTestCA(t, "some other CA")
	_, _, leaf := ca.issue(t, "api.partner.test", false, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), "api.partner.test")
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, append(append([]byte{}, other.pem...), ca.pem...), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SIDEKEY_TEST_CA", string(ca.pem))
	for _, ref := range []config.Ref{{Kind: config.RefFile, Name: file}, {Kind: config.RefEnv, Name: "SIDEKEY_TEST_CA"}} {
		pool, err := CAPool(ref)
		if err != nil {
			t.Fatalf("CAPool(%s): %v", ref, err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "api.partner.test"}); err != nil {
			t.Fatalf("CAPool(%s) does not verify the CA's certificate: %v", ref, err)
		}
	}

	t.Setenv("SIDEKEY_TEST_NOT_PEM", "not a certificate")
	if _, err := CAPool(config.Ref{Kind: config.RefEnv, Name: "SIDEKEY_TEST_NOT_PEM"}); !errors.Is(err, ErrBadCertificate) {
		t.Fatalf("CAPool of garbage: %v, want ErrBadCertificate", err)
	}
	if _, err := CAPool(config.Ref{Kind: config.RefFile, Name: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Fatal("CAPool of a missing file succeeded")
	}
	if _, err := CAPool(config.Ref{Kind: config.RefVault, Name: "secret/data/ca", Field: "pem"}); err == nil {
		t.Fatal("CAPool of a vault: reference succeeded without a client")
	}
}
