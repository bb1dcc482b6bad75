package config

import (
	"maps"
	"slices"
	"strings"
)

var (
	certificateSources = []string{"vault-pki", "file"}
	certificateKeys    = map[string]keySet{
		"vault-pki": {uses: []string{"path", "common_name", "ttl"}, needs: []string{"path", "common_name"}},
		"file":      {uses: []string{"cert", "key"}, needs: []string{"cert", "key"}},
	}
)

// certificates converts every outbound client certificate, sorted by name.
func (c *checker) certificates(fs map[string]*fileCertificate) []Certificate {
	out := make([]Certificate, 0, len(fs))
	for _, name := range slices.Sorted(maps.Keys(fs)) {
		out = append(out, c.certificate(name, fs[name]))
	}
	return out
}

func (c *checker) certificate(name string, f *fileCertificate) Certificate {
	path := "certificates." + name
	c.name(f.line, path, name)
	cert := Certificate{Name: name, Line: f.line}
	if c.require(&f.meta, path, "source") && c.oneOf(path+".source", f.Source, &cert.Source, certificateSources) {
		c.checkKeys(&f.meta, path, "source "+cert.Source, certificateKeys[cert.Source], "source")
	}
	if cert.Source == "vault-pki" {
		c.needVault(f.Source.line, path, "source vault-pki")
	}
	c.nonEmpty(path+".path", f.Path, &cert.Path)
	c.nonEmpty(path+".common_name", f.CommonName, &cert.CommonName)
	c.positive(path+".ttl", f.TTL, &cert.TTL)
	c.filePath(path+".cert", f.Cert, &cert.CertFile)
	c.filePath(path+".key", f.Key, &cert.KeyFile)
	return cert
}

// filePath reads the path of a PEM file; PEM written inline is refused.
func (c *checker) filePath(path string, s *str, dst *string) {
	if s.ok() && (strings.TrimSpace(s.v) == "" || strings.ContainsAny(s.v, "\r\n")) {
		c.add(s.line, path, "must be the path of a PEM file, not its contents")
		return
	}
	s.to(dst)
}
