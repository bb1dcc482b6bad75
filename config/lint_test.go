package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Credential-shaped fixtures are assembled at run time so that no file in
// the repository holds one literally.
func credentialFixtures() []struct{ kind, value string } {
	return []struct{ kind, value string }{
		{"a PEM private key", "-----BEGIN " + "PRIVATE KEY-----"},
		{"a PEM private key", "-----BEGIN RSA " + "PRIVATE KEY-----"},
		{"a PEM private key", "-----BEGIN OPENSSH " + "PRIVATE KEY-----"},
		{"a PEM private key", "-----BEGIN EC " + "PRIVATE KEY-----"},
		{"a GitHub token", "ghp_" + strings.Repeat("aB3", 12)},
		{"a GitHub token", "gho_" + strings.Repeat("aB3", 12)},
		{"a GitHub token", "ghu_" + strings.Repeat("aB3", 12)},
		{"a GitHub token", "ghs_" + strings.Repeat("aB3", 12)},
		{"a GitHub token", "ghr_" + strings.Repeat("aB3", 12)},
		{"a GitHub fine-grained token", "github_pat_" + strings.Repeat("A1_b", 6)},
		{"an AWS access key ID", "AKIA" + strings.Repeat("Z7", 8)},
		{"an AWS access key ID", "ASIA" + strings.Repeat("Q4", 8)},
		{"a Slack token", "xoxb-" + "1234567890-" + strings.Repeat("ab", 8)},
		{"a Slack token", "xoxp-" + strings.Repeat("9", 12)},
		{"an sk- secret key", "sk-" + strings.Repeat("Ab3", 16)},
		{"an sk- secret key", "sk-proj-" + strings.Repeat("Ab_3-", 8)},
		{"a Stripe secret key", "sk_live_" + strings.Repeat("x7", 12)},
		{"a Stripe secret key", "rk_test_" + strings.Repeat("x7", 12)},
		{"a JWT", "eyJ" + "hbGciOiJIUzI1NiJ9" + "." + "eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + "." + strings.Repeat("s1G-", 8)},
	}
}

func TestLintFindsCredentialShapes(t *testing.T) {
	for _, fx := range credentialFixtures() {
		for _, line := range []string{
			"token: " + fx.value,
			"token: \"" + fx.value + "\"",
			"listen: :8080 # was " + fx.value,
			"  - " + fx.value,
			"url: https://x:" + fx.value + "@host.example",
			fx.value,
		} {
			src := "listen: :8080\n" + line + "\nlog: {}\n"
			got := Lint("f.yaml", []byte(src))
			want := "f.yaml:2: looks like " + fx.kind + "; secrets must be references (env:, file:, vault:), never literals"
			if len(got) != 1 || got[0].Error() != want {
				t.Errorf("Lint(%q) = %v, want [%s]", line, got, want)
			}
			if len(got) > 0 && strings.Contains(got[0].Error(), fx.value) {
				t.Errorf("Lint(%q) names the value", line)
			}
		}
	}
}

func TestLintIgnoresOrdinaryText(t *testing.T) {
	for _, line := range []string{
		"token: env:GITHUB_TOKEN",
		"client_secret: vault:secret/data/partner#client_secret",
		"ca: file:/etc/ssl/partner-ca.pem",
		"upstream: https://api.github.com/repos/sidekey/sidekey",
		"# see https://github.com/settings/tokens?type=beta to make a token",
		"name: risk-assessment-pipeline-config-service",
		"name: task-scheduler-background-worker",
		"path: /var/run/secrets/kubernetes.io/serviceaccount/token",
		"cert_out: /run/sidekey/ca.pem",
		"-----BEGIN CERTIFICATE-----",
		"-----BEGIN PUBLIC KEY-----",
		"prefix: ghp_ is a classic token prefix",
		"prefix: ghp_short",
		"region: AKIA-docs",
		"header: eyJ.is.how.JSON.starts",
		"command: [xox, sk-short]",
	} {
		if got := Lint("f.yaml", []byte(line)); len(got) != 0 {
			t.Errorf("Lint(%q) = %v, want nothing", line, got)
		}
	}
}

// TestScanHonoursAllowSecret checks that Scan finds what Lint finds, by
// line and kind, also on a last line with no newline, except on a line
// marked AllowSecret, which Lint still reports.
func TestScanHonoursAllowSecret(t *testing.T) {
	for _, fx := range credentialFixtures() {
		src := "a: 1\n" + fx.value + "\nb: " + fx.value + " # " + AllowSecret + "\nc: " + fx.value
		want := []Finding{{Line: 2, Kind: fx.kind}, {Line: 4, Kind: fx.kind}}
		if got := Scan([]byte(src)); !slices.Equal(got, want) {
			t.Errorf("Scan(%s) = %v, want %v", fx.kind, got, want)
		}
		var lines []int
		for _, p := range Lint("f.yaml", []byte(src)) {
			lines = append(lines, p.Line)
		}
		if !slices.Equal(lines, []int{2, 3, 4}) {
			t.Errorf("Lint(%s) reports lines %v, want [2 3 4]: a config may not excuse a literal", fx.kind, lines)
		}
	}
	if got := Scan(nil); got != nil {
		t.Errorf("Scan(nil) = %v", got)
	}
}

// TestLintJoinsParseProblems checks that Parse reports lint problems, also
// in comments and in an otherwise valid file, with the others in line order.
func TestLintJoinsParseProblems(t *testing.T) {
	aws := "AKIA" + strings.Repeat("Z7", 8)
	src := "listen: 127.0.0.1:8080\n# old key: " + aws + "\nlisen: x\n"
	got := problemLines(t, src)
	want := []string{
		"bad.yaml:2: looks like an AWS access key ID; secrets must be references (env:, file:, vault:), never literals",
		`bad.yaml:3: unknown key "lisen"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestOwnFilesHaveNoCredentialShapes keeps this package's sources and
// test data free of credential-shaped strings.
func TestOwnFilesHaveNoCredentialShapes(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	data, _ := filepath.Glob("testdata/*")
	for _, name := range append(files, data...) {
		b, err := os.ReadFile(name)
		if err != nil {
			continue // a directory
		}
		for _, p := range Lint(name, b) {
			t.Errorf("%v", p)
		}
	}
}
