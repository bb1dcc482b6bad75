package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// checker collects the problems of one file while build converts it.
type checker struct {
	file      string
	probs     []Problem
	seen      map[Problem]bool
	vaultUses []vaultUse          // what needs a vault section
	listeners map[string]listener // address -> first listener on it
	values    int                 // values decoded so far, see maxValues
}

// vaultUse is something that needs a vault section, for the message.
type vaultUse struct {
	line      int
	path, why string
}

type listener struct {
	path string
	line int
}

// keySet says which keys a kind of entry (a credential source, a vault auth
// method, an injection form, a certificate source) uses and which it needs.
type keySet struct{ uses, needs []string }

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	hostRE    = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func newChecker(file string) *checker {
	return &checker{file: file, seen: map[Problem]bool{}, listeners: map[string]listener{}}
}

// add records a problem at line, prefixed by path when path is not empty.
// Anything shaped like a credential is redacted from the message.
func (c *checker) add(line int, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	msg = redact(strings.Join(strings.Fields(msg), " "))
	p := Problem{File: c.file, Line: line, Msg: msg}
	if !c.seen[p] {
		c.seen[p] = true
		c.probs = append(c.probs, p)
	}
}

// err returns every problem in line order, joined, or nil.
func (c *checker) err() error {
	sort.Slice(c.probs, func(i, j int) bool {
		a, b := c.probs[i], c.probs[j]
		return a.Line < b.Line || a.Line == b.Line && a.Msg < b.Msg
	})
	errs := make([]error, len(c.probs))
	for i, p := range c.probs {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// require reports each of keys that m lacks and says whether m has them all.
func (c *checker) require(m *meta, path string, keys ...string) bool {
	ok := true
	for _, k := range keys {
		if !m.has(k) {
			c.add(m.line, path, "%s is required", k)
			ok = false
		}
	}
	return ok
}

// checkKeys reports the keys of m that ks does not use (what names the
// kind, e.g. "source env") and the keys it needs that m lacks. common are
// keys every kind takes.
func (c *checker) checkKeys(m *meta, path, what string, ks keySet, common ...string) {
	for k, line := range m.keys {
		if !slices.Contains(ks.uses, k) && !slices.Contains(common, k) {
			c.add(line, path, "%s is not used by %s", k, what)
		}
	}
	for _, k := range ks.needs {
		if !m.has(k) {
			c.add(m.line, path, "%s is required for %s", k, what)
		}
	}
}

// oneOf stores s in dst when it is one of allowed. It reports false only
// when s was written and is not allowed.
func (c *checker) oneOf(path string, s *str, dst *string, allowed []string) bool {
	if !s.ok() {
		return s == nil
	}
	if !slices.Contains(allowed, s.v) {
		c.add(s.line, path, "%s is not one of %s", quote(s.v), strings.Join(allowed, ", "))
		return false
	}
	*dst = s.v
	return true
}

// nonEmpty stores s in dst, refusing an empty or blank string.
func (c *checker) nonEmpty(path string, s *str, dst *string) {
	if !s.ok() {
		return
	}
	if strings.TrimSpace(s.v) == "" {
		c.add(s.line, path, "must not be empty")
		return
	}
	*dst = s.v
}

// positive stores d in dst, refusing zero.
func (c *checker) positive(path string, d *dur, dst *time.Duration) {
	if !d.ok() {
		return
	}
	if d.v == 0 {
		c.add(d.line, path, "must be more than zero")
		return
	}
	*dst = d.v
}

// name checks the name of a credential, certificate or route: it appears
// in URLs, metric labels and log fields.
func (c *checker) name(line int, path, name string) bool {
	if !nameRE.MatchString(name) {
		c.add(line, path, "a name must start with a letter or digit and hold only letters, digits, '.', '_' and '-'")
		return false
	}
	return true
}

// listen stores a host:port listen address in dst and claims it.
func (c *checker) listen(path string, s *str, dst *string) {
	if !s.ok() {
		return
	}
	if err := checkHostPort(s.v); err != nil {
		c.add(s.line, path, "%s is not a listen address: %v", quote(s.v), err)
		return
	}
	*dst = s.v
	c.claim(path, s.v, s.line)
}

// listenOrUnix is listen that also takes unix:PATH, a unix socket.
func (c *checker) listenOrUnix(path string, s *str, dst *string) {
	if !s.ok() || !strings.HasPrefix(s.v, UnixPrefix) {
		c.listen(path, s, dst)
		return
	}
	sock := strings.TrimPrefix(s.v, UnixPrefix)
	switch {
	case strings.TrimSpace(sock) == "" || strings.ContainsAny(sock, "\x00\r\n"):
		c.add(s.line, path, "unix: needs the path of the socket")
		return
	case len(sock) > maxSocketPath:
		c.add(s.line, path, "a unix socket path may have at most %d bytes", maxSocketPath)
		return
	}
	*dst = s.v
	c.claim(path, s.v, s.line)
}

// maxSocketPath is the longest socket path Linux takes (sun_path less its
// terminating NUL).
const maxSocketPath = 107

// claim records that path listens on addr, reporting a second listener on
// the same address at the later of the two lines. Port 0 (any free port)
// never clashes; line 0 is a default.
func (c *checker) claim(path, addr string, line int) {
	if strings.HasSuffix(addr, ":0") {
		return
	}
	first, dup := c.listeners[addr]
	if !dup {
		c.listeners[addr] = listener{path, line}
		return
	}
	if first.line > line {
		first, path, line = listener{path, line}, first.path, first.line
	}
	c.add(line, path, "listens on the same address as %s", first.path)
}

// httpURL parses an absolute http or https URL. The value is never echoed:
// a URL may carry a token.
func (c *checker) httpURL(path string, s *str) *url.URL {
	if !s.ok() {
		return nil
	}
	u, err := url.Parse(s.v)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Opaque != "":
		c.add(s.line, path, "must be an absolute http or https URL with a host")
	case u.User != nil:
		c.add(s.line, path, "must not carry user info; credentials belong in the credentials section")
	case u.Fragment != "":
		c.add(s.line, path, "must not have a fragment")
	default:
		return u
	}
	return nil
}

// ref reads a secret-carrying field, which must be a reference. The value
// is never echoed: it may be a literal secret.
func (c *checker) ref(path string, s *str) *Ref {
	if !s.ok() {
		return nil
	}
	r, err := ParseRef(s.v)
	if err != nil {
		c.add(s.line, path, "%v", err)
		return nil
	}
	if r.Kind == RefVault {
		c.needVault(s.line, path, "a vault: reference")
	}
	return &r
}

// needVault notes that what, at line, needs a vault section.
func (c *checker) needVault(line int, path, why string) {
	c.vaultUses = append(c.vaultUses, vaultUse{line, path, why})
}

// hosts reads a list of host names, lower-cased.
func (c *checker) hosts(path string, list []*str) []string {
	var out []string
	for i, s := range list {
		if !s.ok() {
			continue
		}
		h, p := strings.ToLower(s.v), fmt.Sprintf("%s[%d]", path, i)
		switch {
		case strings.HasPrefix(h, "*."):
			c.add(s.line, p, "wildcard names are not supported")
			continue
		case !validHost(h):
			c.add(s.line, p, "%s is not a host name", quote(s.v))
			continue
		}
		out = append(out, h)
	}
	return out
}

// checkHostPort checks a listen address: [host]:port, port 0-65535.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port, e.g. 127.0.0.1:8080 or :8443")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("the port must be a number from 0 to 65535")
	}
	if host != "" && !validHost(strings.ToLower(host)) {
		return errors.New("the host is not a host name or IP address")
	}
	return nil
}

// validHost reports whether h is a lower-case host name or an IP address.
func validHost(h string) bool {
	return hostRE.MatchString(h) || net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")) != nil
}

// quote renders a non-secret value for a message: quoted, and cut short.
func quote(s string) string {
	const maxRunes = 40
	if utf8.RuneCountInString(s) > maxRunes {
		s = string([]rune(s)[:maxRunes]) + "..."
	}
	return strconv.Quote(s)
}
