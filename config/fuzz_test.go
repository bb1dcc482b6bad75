package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics and either returns a Config or
// an error whose every line is a "NAME:LINE: message" problem.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range seeds {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "---\n", "- a\n", "listen: [\n", "log:\n\tlevel: x\n", "a: &a {b: *a}\n",
		"routes:\n  - &r {name: a, <<: *r}\n", "credentials:\n  x: {<<: [*y]}\n",
		"routes:\n  - name: a\n    match: {host: a}\n    upstream: https://a\n  - <<: [{name: b}, {timeout: 1s}]\n",
		"credentials: {a: {source: oauth2, params: {scope: x}, data: {1: [2]}}}\n",
		"tls: {acme: {storage: \"vault:\", challenge: http-01}}\n", "admin: {token: \"env:\"}\n",
		"listen: :8080\n---\n---\n", "\xff\xfe", "? [a]\n: b\n", "!!binary aGVsbG8=\n",
	} {
		f.Add([]byte(s))
	}
	line := regexp.MustCompile(`^fuzz\.yaml:\d+: \S`)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("Parse returned neither a Config nor an error")
			}
			return
		}
		for _, l := range strings.Split(err.Error(), "\n") {
			if !line.MatchString(l) {
				t.Fatalf("problem line %q is not NAME:LINE: message", l)
			}
		}
	})
}
