package certs

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// publicFileMode is the mode of cert_out and bundle_out: certificates are
// public, and the apps that read them may run as other users.
const publicFileMode fs.FileMode = 0o644

// maxRootsFile bounds the system root bundle read.
const maxRootsFile = 16 << 20

// rootBundleFiles are where systems keep their trusted roots as one PEM
// file, in the order crypto/x509 tries them on Linux, then the BSDs' and
// macOS's.
var rootBundleFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Arch
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine, macOS, OpenBSD
	"/usr/local/etc/ssl/cert.pem",                       // FreeBSD
	"/usr/local/share/certs/ca-root-nss.crt",            // DragonFly
	"/etc/openssl/certs/ca-certificates.crt",            // NetBSD
}

// WriteFiles writes the CA's public files: certOut gets CertPEM, and
// bundleOut the system's trusted roots followed by CertPEM, for
// SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and the like. Either
// path may be "" to skip it. Each is replaced atomically (WriteFileAtomic)
// with mode 0644; the directory must exist. Nothing else is written: no
// key, ever.
//
// The roots are read from $SSL_CERT_FILE when it is set, as crypto/x509
// does, else from the first of the usual bundle files that holds a
// certificate; only their CERTIFICATE blocks are copied. A roots file that
// is certOut or bundleOut itself (SSL_CERT_FILE pointed at the bundle, as
// the apps' environment may set it) is skipped. rootsFrom is the file the
// roots came from, or "" when none was found (on Windows, say): the bundle
// then holds the CA alone.
func (ca *ForwardCA) WriteFiles(certOut, bundleOut string) (rootsFrom string, err error) {
	if certOut != "" {
		if err := WriteFileAtomic(certOut, ca.certPEM, publicFileMode); err != nil {
			return "", err
		}
	}
	if bundleOut == "" {
		return "", nil
	}
	roots, from := systemRoots(rootCandidates(), certOut, bundleOut)
	bundle := append(roots, ca.certPEM...)
	if err := WriteFileAtomic(bundleOut, bundle, publicFileMode); err != nil {
		return "", err
	}
	return from, nil
}

// rootCandidates lists the files the system roots may be read from.
func rootCandidates() []string {
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		return []string{f}
	}
	return rootBundleFiles
}

// systemRoots returns the CERTIFICATE blocks of the first candidate that
// can be read and holds one, and its name; nil and "" when none does.
// Candidates that are one of the skip files are passed over, and if that
// leaves none, the usual bundle files are tried.
func systemRoots(candidates []string, skip ...string) ([]byte, string) {
	tried := false
	for _, f := range candidates {
		if isOneOf(f, skip) {
			continue
		}
		tried = true
		if b := readCertificates(f); len(b) > 0 {
			return b, f
		}
	}
	if !tried && len(candidates) > 0 {
		return systemRoots(rootBundleFiles, skip...)
	}
	return nil, ""
}

// readCertificates reads path and returns its CERTIFICATE blocks,
// re-encoded without headers, so that nothing else in the file (a key in
// a combined file, say) is copied. It returns nil if the file cannot be
// read or holds none.
func readCertificates(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRootsFile+1))
	if err != nil || len(b) > maxRootsFile {
		return nil
	}
	var out bytes.Buffer
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			_ = pem.Encode(&out, &pem.Block{Type: blk.Type, Bytes: blk.Bytes})
		}
	}
	return out.Bytes()
}

// isOneOf reports whether path names the same file as one of others: the
// same cleaned absolute path, or the same file on disk.
func isOneOf(path string, others []string) bool {
	abs, _ := filepath.Abs(path)
	st, statErr := os.Stat(path)
	for _, o := range others {
		if o == "" {
			continue
		}
		if oAbs, _ := filepath.Abs(o); oAbs == abs {
			return true
		}
		if ost, err := os.Stat(o); err == nil && statErr == nil && os.SameFile(st, ost) {
			return true
		}
	}
	return false
}

// WriteFileAtomic replaces path with data: it writes a temporary file in
// the same directory, sets perm, syncs it, renames it over path and syncs
// the directory, so a reader sees the old content or the new, never a part.
// The directory must exist. On failure the temporary file is removed and
// path is left as it was.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename in dir durable where the system allows it;
// failures (some file systems refuse to sync a directory) are ignored, as
// the rename itself has happened.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	d.Close()
}
