package config

import (
	"bytes"
	"regexp"
	"strings"
)

// credentialShapes are the shapes of well-known credentials, matched by
// shape alone with no checksum test: a false alarm costs the user a
// reference, a miss leaks a secret. Group 1 is the left boundary, group 2
// the credential.
// hint is a literal every match contains, a cheap test before the regexp.
var credentialShapes = []struct {
	kind string
	hint string
	re   *regexp.Regexp
}{
	{"a PEM private key", "PRIVATE KEY-----", regexp.MustCompile(`()(-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----)`)},
	{"a GitHub token", "gh", regexp.MustCompile(`(^|[^A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36})`)},
	{"a GitHub fine-grained token", "github_pat_", regexp.MustCompile(`(^|[^A-Za-z0-9_])(github_pat_[A-Za-z0-9_]{22,})`)},
	{"an AWS access key ID", "IA", regexp.MustCompile(`(^|[^A-Za-z0-9])((?:AKIA|ASIA)[0-9A-Z]{16})`)},
	{"a Slack token", "xox", regexp.MustCompile(`(^|[^A-Za-z0-9_-])(xox[bpoas]-[A-Za-z0-9-]{10,})`)},
	{"an sk- secret key", "sk-", regexp.MustCompile(`(^|[^A-Za-z0-9_-])(sk-[A-Za-z0-9_-]{20,})`)},
	{"a Stripe secret key", "k_", regexp.MustCompile(`(^|[^A-Za-z0-9_-])([sr]k_(?:live|test)_[A-Za-z0-9]{10,})`)},
	{"a JWT", "eyJ", regexp.MustCompile(`(^|[^A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)`)},
}

const lintAdvice = "; secrets must be references (env:, file:, vault:), never literals"

// AllowSecret on a line makes Scan pass over that line: it marks a
// deliberate fixture, such as a test's fake token, in source files. Lint
// does not honour it: a configuration may not excuse its own literal secret.
const AllowSecret = "sidekey:allow-secret"

// Finding is one credential-shaped string: where it is and what it looks
// like, never the value.
type Finding struct {
	Line int    // 1-based
	Kind string // such as "a GitHub token"
}

// Lint scans the whole of data, comments included, for strings shaped like
// well-known credentials: PEM private keys, GitHub, AWS, Slack, sk- and
// Stripe keys, and JWTs. It returns one problem per kind and line, naming
// the kind, never the value.
func Lint(name string, data []byte) []Problem {
	var out []Problem
	for _, f := range find(data, false) {
		out = append(out, Problem{File: name, Line: f.Line, Msg: "looks like " + f.Kind + lintAdvice})
	}
	return out
}

// Scan is Lint's detector for any text file: one finding per kind and
// line, in line order, except on lines that contain AllowSecret.
func Scan(data []byte) []Finding {
	return find(data, true)
}

// find runs the detector line by line; allow honours AllowSecret.
func find(data []byte, allow bool) []Finding {
	var out []Finding
	n := 0
	for line := range bytes.Lines(data) {
		n++
		if allow && bytes.Contains(line, []byte(AllowSecret)) {
			continue
		}
		for _, s := range credentialShapes {
			if bytes.Contains(line, []byte(s.hint)) && s.re.Match(line) {
				out = append(out, Finding{Line: n, Kind: s.kind})
			}
		}
	}
	return out
}

// redact replaces anything shaped like a credential in a message.
func redact(msg string) string {
	for _, s := range credentialShapes {
		if strings.Contains(msg, s.hint) {
			msg = s.re.ReplaceAllString(msg, "${1}[redacted]")
		}
	}
	return msg
}
