package proxy

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// Callers (SPEC "Callers"): when the configuration names callers, every
// request must name one — by a caller token, a client certificate on the
// TLS listener or the peer uid on a unix socket — before any credential is
// used for it. The check works on plain values (header bytes, a
// connection's identity), so every listener kind shares it: the app-facing
// listener answers 401, the forward proxy 407.

// caller is one configured caller, compiled. Immutable.
type caller struct {
	name   string
	kind   string
	idx    int              // position in callerTable.all
	holder *injector.Holder // token callers: the caller token
	cert   config.CertMatch // cert callers
	uid    uint32           // uid callers
	stats  *callerStats
	audit  auditKey // the audit line's caller field, escaped
}

// callerStats count one caller's use; they survive reloads.
type callerStats struct {
	requests atomic.Uint64
	refused  atomic.Uint64
	lastSeen atomic.Int64 // Unix nanoseconds; 0: never
}

func (s *callerStats) seen(t time.Time) { s.lastSeen.Store(t.UnixNano()) }

// callerTable is a table's callers. Immutable; identify allocates nothing.
type callerTable struct {
	all       []*caller
	tokens    []*caller
	certs     []*caller
	byUID     map[uint32]*caller
	anonymous bool // a request that names no caller is admitted
}

// newCallerTable compiles cfg's callers, taking token holders from
// holders and stats from stats (reused across reloads).
func newCallerTable(cfg *config.Config, holders Holders, stats func(name string) *callerStats) (*callerTable, error) {
	ct := &callerTable{byUID: map[uint32]*caller{}, anonymous: len(cfg.Callers) == 0 || cfg.AllowAnonymous}
	for _, cc := range cfg.Callers {
		c := &caller{name: cc.Name, kind: cc.Kind(), idx: len(ct.all), stats: stats(cc.Name)}
		c.audit = inBothFormats(func(b []byte, text bool) []byte { return fieldStr(b, keyCaller, cc.Name, text) })
		switch c.kind {
		case config.CallerToken:
			c.holder = holders.Holder(cc.CallerCredential().Name)
			if c.holder == nil {
				return nil, fmt.Errorf("caller %s: its token is not held", cc.Name)
			}
			ct.tokens = append(ct.tokens, c)
		case config.CallerCert:
			c.cert = *cc.Cert
			ct.certs = append(ct.certs, c)
		case config.CallerUID:
			c.uid = uint32(cc.UID)
			ct.byUID[c.uid] = c
		}
		ct.all = append(ct.all, c)
	}
	return ct, nil
}

// enabled reports whether callers are configured at all; without them
// nothing is checked and every request is anonymous.
func (ct *callerTable) enabled() bool { return len(ct.all) > 0 }

// byName returns the named caller, or nil.
func (ct *callerTable) byName(name string) *caller {
	for _, c := range ct.all {
		if c.name == name {
			return c
		}
	}
	return nil
}

// presented is what a request offers to name its caller.
type presented struct {
	// proxy is the token of Proxy-Authorization; a wrong one is refused
	// even when the connection names a caller.
	proxy []byte
	// place is the token in the place the route injects (the app's old
	// API-key setting); a value that is no caller token is ignored when
	// the connection names a caller.
	place []byte
	// conn is the connection's own identity, if any.
	conn connIdentity
}

// identify finds the caller of a request, or the refusal code. A token
// wins over the connection's identity; without either, the request is
// anonymous when the table admits that. A nil caller with an empty code is
// an admitted anonymous request.
func (ct *callerTable) identify(p *presented) (*caller, string) {
	if len(p.proxy) > 0 {
		if c := ct.byToken(p.proxy); c != nil {
			return c, ""
		}
		return nil, codeUnauthn
	}
	if len(p.place) > 0 {
		if c := ct.byToken(p.place); c != nil {
			return c, ""
		}
	}
	if c := ct.byConn(p.conn); c != nil {
		return c, ""
	}
	if ct.anonymous {
		return nil, ""
	}
	return nil, codeUnauthn
}

// byToken compares tok with every caller token's current value in
// constant time, all of them whatever matched, so that the time taken
// tells nothing about which caller (if any) it is.
func (ct *callerTable) byToken(tok []byte) *caller {
	var found *caller
	for _, c := range ct.tokens {
		v, err := c.holder.Acquire()
		if err != nil {
			continue
		}
		s := v.Secret().Value
		if subtle.ConstantTimeCompare(tok, unsafe.Slice(unsafe.StringData(s), len(s))) == 1 && found == nil {
			found = c
		}
		v.Release()
	}
	return found
}

// byConn finds the caller a connection's identity names.
func (ct *callerTable) byConn(id connIdentity) *caller {
	if id == nil {
		return nil
	}
	if uid, ok := id.peerUID(); ok {
		if c := ct.byUID[uid]; c != nil {
			return c
		}
	}
	if len(ct.certs) == 0 {
		return nil
	}
	cert := id.peerCert()
	if cert == nil {
		return nil
	}
	for _, c := range ct.certs {
		if cert.matches(c.cert) {
			return c
		}
	}
	return nil
}

// proxyAuthToken extracts the token of a Proxy-Authorization value:
// "Bearer TOKEN", or "Basic" credentials whose password is the token (the
// user name, usually the caller's name, is not checked). A Basic password
// is decoded into scratch. nil when the value carries no token.
func proxyAuthToken(v, scratch []byte) ([]byte, []byte) {
	if tok, ok := cutScheme(v, "Bearer"); ok {
		return tok, scratch
	}
	if enc, ok := cutScheme(v, "Basic"); ok {
		return basicPassword(enc, scratch)
	}
	return nil, scratch
}

// cutScheme returns what follows an authentication scheme (matched case
// insensitively) and its spaces.
func cutScheme(v []byte, scheme string) ([]byte, bool) {
	if len(v) <= len(scheme) || !bytes.EqualFold(v[:len(scheme)], []byte(scheme)) || v[len(scheme)] != ' ' {
		return nil, false
	}
	return bytes.TrimSpace(v[len(scheme):]), true
}

// basicPassword decodes base64 user:password credentials into scratch and
// returns the password.
func basicPassword(enc, scratch []byte) ([]byte, []byte) {
	n := base64.StdEncoding.DecodedLen(len(enc))
	if cap(scratch) < n {
		scratch = make([]byte, n)
	}
	dec := scratch[:n]
	m, err := base64.StdEncoding.Decode(dec, enc)
	if err != nil {
		return nil, scratch
	}
	_, pass, ok := bytes.Cut(dec[:m], []byte(":"))
	if !ok {
		return nil, scratch
	}
	return pass, scratch
}

// CallerInfo is one caller's use for the admin API (GET /v1/callers). It
// never holds a token.
type CallerInfo struct {
	Name     string    `json:"name"`
	Kind     string    `json:"kind"`
	Requests uint64    `json:"requests"`
	Refused  uint64    `json:"refused"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// Callers reports every configured caller's use, sorted by name.
func (p *Proxy) Callers() []CallerInfo {
	t := p.table.Load()
	out := make([]CallerInfo, 0, len(t.callers.all))
	for _, c := range t.callers.all {
		in := CallerInfo{Name: c.name, Kind: c.kind, Requests: c.stats.requests.Load(), Refused: c.stats.refused.Load()}
		if ns := c.stats.lastSeen.Load(); ns != 0 {
			in.LastSeen = time.Unix(0, ns).UTC()
		}
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// callerRegistry keeps each caller's stats across reloads, by name.
type callerRegistry struct {
	mu    sync.Mutex
	stats map[string]*callerStats
}

func (r *callerRegistry) get(name string) *callerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stats == nil {
		r.stats = map[string]*callerStats{}
	}
	s := r.stats[name]
	if s == nil {
		s = &callerStats{}
		r.stats[name] = s
	}
	return s
}
