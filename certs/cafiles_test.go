package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.pem")
	for _, content := range []string{"first\n", "second, longer than the first\n", ""} {
		if err := WriteFileAtomic(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != content {
			t.Fatalf("content %q, %v; want %q", b, err, content)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode() != 0o644 {
			t.Fatalf("mode %v, %v; want -rw-r--r--", st.Mode(), err)
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"ca.pem"}) {
			t.Fatalf("directory holds %v", names)
		}
	}
	if err := WriteFileAtomic(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode() != 0o600 {
		t.Fatalf("mode %v, want the one asked for", st.Mode())
	}

	missing := filepath.Join(dir, "no-such-dir", "ca.pem")
	if err := WriteFileAtomic(missing, []byte("x"), 0o644); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("write into a missing directory: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the missing directory was created")
	}

	// A rename that fails (the target is a non-empty directory) leaves
	// no temporary file behind.
	target := filepath.Join(dir, "taken")
	if err := os.MkdirAll(filepath.Join(target, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(target, []byte("x"), 0o644); err == nil {
		t.Fatal("replaced a directory")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"ca.pem", "taken"}) {
		t.Fatalf("directory holds %v after a failed write", names)
	}
}

// rootsFile writes a PEM file of two test roots with the clutter real
// bundles have, plus a private key that must never be copied.
func rootsFile(t *testing.T, dir string) (path string, roots []*testCA, key []byte) {
	t.Helper()
	roots = []*testCA{newTestCA(t, "root one"), newTestCA(t, "root two")}
	_, key, _ = roots[0].issue(t, "x", false, epoch, epoch, "x.test")
	var b bytes.Buffer
	b.WriteString("# a comment, as Fedora's bundle has\n")
	b.Write(roots[0].pem)
	b.WriteString("Certificate: text that OpenSSL's -text adds\n")
	b.Write(key)
	b.Write(roots[1].pem)
	path = filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, roots, key
}

func pemCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				t.Fatalf("trailing text: %q", rest)
			}
			return out
		}
		if blk.Type != "CERTIFICATE" || len(blk.Headers) != 0 {
			t.Fatalf("block %q with headers %v", blk.Type, blk.Headers)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func TestForwardCAWriteFiles(t *testing.T) {
	dir := t.TempDir()
	roots, testRoots, key := rootsFile(t, dir)
	ca := newForwardCA(t, nil, "api.example.test")
	certOut, bundleOut := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "bundle.pem")

	t.Setenv("SSL_CERT_FILE", roots)
	from, err := ca.WriteFiles(certOut, bundleOut)
	if err != nil || from != roots {
		t.Fatalf("WriteFiles = %q, %v; want the roots from %s", from, err, roots)
	}
	b, _ := os.ReadFile(certOut)
	if got := pemCerts(t, b); len(got) != 1 || !got[0].Equal(ca.cert) {
		t.Fatalf("cert_out holds %d certificates, not the CA alone", len(got))
	}
	bundle, _ := os.ReadFile(bundleOut)
	if got := pemCerts(t, bundle); len(got) != 3 || !got[0].Equal(testRoots[0].cert) || !got[1].Equal(testRoots[1].cert) || !got[2].Equal(ca.cert) {
		t.Fatalf("bundle holds %d certificates, want the two roots and the CA", len(got))
	}
	for _, s := range keySecrets(key) {
		if strings.Contains(string(bundle), s) {
			t.Fatal("the bundle holds a private key from the roots file")
		}
	}
	for _, p := range []string{certOut, bundleOut} {
		if st, _ := os.Stat(p); st.Mode() != 0o644 {
			t.Errorf("%s: mode %v", filepath.Base(p), st.Mode())
		}
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"bundle.pem", "ca.pem", "roots.pem"}) {
		t.Fatalf("directory holds %v", names)
	}

	// SSL_CERT_FILE naming the bundle itself (the apps' environment) is
	// not read back: the roots come from the system's files instead.
	t.Setenv("SSL_CERT_FILE", bundleOut)
	from, err = ca.WriteFiles(certOut, bundleOut)
	if err != nil {
		t.Fatal(err)
	}
	if from == bundleOut || (from != "" && !slices.Contains(rootBundleFiles, from)) {
		t.Fatalf("roots read from %q", from)
	}
	bundle, _ = os.ReadFile(bundleOut)
	for _, c := range pemCerts(t, bundle) {
		if c.Equal(testRoots[0].cert) {
			t.Fatal("the previous bundle was read back into the new one")
		}
	}
	t.Logf("system roots from %q", from)

	// No roots anywhere: the bundle holds the CA alone, and says so.
	t.Setenv("SSL_CERT_FILE", filepath.Join(dir, "missing.pem"))
	from, err = ca.WriteFiles("", bundleOut)
	if err != nil || from != "" {
		t.Fatalf("WriteFiles = %q, %v; want no roots", from, err)
	}
	bundle, _ = os.ReadFile(bundleOut)
	if got := pemCerts(t, bundle); len(got) != 1 || !got[0].Equal(ca.cert) {
		t.Fatalf("bundle without roots holds %d certificates", len(got))
	}

	if _, err := ca.WriteFiles(filepath.Join(dir, "nope", "ca.pem"), ""); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}

func TestSystemRoots(t *testing.T) {
	dir := t.TempDir()
	roots, _, _ := rootsFile(t, dir)
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "a-directory")
	if err := os.Mkdir(unreadable, 0o755); err != nil {
		t.Fatal(err)
	}
	b, from := systemRoots([]string{filepath.Join(dir, "missing"), unreadable, empty, roots})
	if from != roots || len(pemCerts(t, b)) != 2 {
		t.Fatalf("systemRoots = %d bytes from %q", len(b), from)
	}
	// Skipping the only candidate falls back to the system's files.
	if _, from := systemRoots([]string{roots}, filepath.Join(dir, ".", "roots.pem")); from == roots || (from != "" && !slices.Contains(rootBundleFiles, from)) {
		t.Fatalf("a skipped file was read: %q", from)
	}
	link := filepath.Join(dir, "link.pem")
	if err := os.Symlink(roots, link); err != nil {
		t.Fatal(err)
	}
	if _, from := systemRoots([]string{link, empty}, roots); from != "" {
		t.Fatalf("a link to a skipped file was read: %q", from)
	}
	if _, from := systemRoots(nil); from != "" {
		t.Fatalf("systemRoots(nil) = %q", from)
	}
}
