package certs

import (
	"bytes"
	"encoding/pem"
	"strings"
)

// SecretSet receives private keys while they are live so that log output
// can be scrubbed of them; telemetry.Redactor and injector.SecretSet fit.
// Add and Remove are balanced: every value added is removed once when it is
// replaced. Calls may come from several goroutines.
type SecretSet interface {
	Add(values ...string)
	Remove(values ...string)
}

// minKeyLine is the shortest base64 line of a key body registered on its
// own; shorter tails could match unrelated text.
const minKeyLine = 16

// keySecrets returns the strings of a PEM private key that a log line could
// show: the PEM as given, and each line of its base64 body (a JSON log line
// escapes the newlines, so the whole PEM would not match there). It
// returns nil when b holds no private key.
func keySecrets(b []byte) []string {
	if !isPrivateKeyPEM(b) {
		return nil
	}
	out := []string{string(b)}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if len(line) >= minKeyLine && !strings.HasPrefix(line, "-----") && !strings.Contains(line, ":") {
			out = append(out, line)
		}
	}
	return out
}

// isPrivateKeyPEM reports whether b contains a PEM private key block.
func isPrivateKeyPEM(b []byte) bool {
	if !bytes.Contains(b, []byte("PRIVATE KEY-----")) {
		return false
	}
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return false
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			return true
		}
	}
}

// registered tracks the key material registered under a name (a storage
// key, a certificate name), so that a replacement removes what it replaces.
// Not safe for concurrent use: callers hold their own lock.
type registered struct {
	secrets SecretSet
	byName  map[string][]string
}

// set registers values under name, replacing (and removing) what was there.
func (r *registered) set(name string, values []string) {
	if r.secrets == nil {
		return
	}
	if r.byName == nil {
		r.byName = map[string][]string{}
	}
	old := r.byName[name]
	if len(values) > 0 {
		r.secrets.Add(values...)
		r.byName[name] = values
	} else {
		delete(r.byName, name)
	}
	if len(old) > 0 {
		r.secrets.Remove(old...)
	}
}

// drop removes whatever is registered under name or below it (name/...).
func (r *registered) drop(name string) {
	for n := range r.byName {
		if n == name || strings.HasPrefix(n, name+"/") || name == "" {
			r.set(n, nil)
		}
	}
}
