package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/injector"
)

// audit writes the canonical line for one request (SPEC "Log lines") into a
// pooled buffer, without reflection, and hands it to the sink, which batches,
// scrubs and writes it off the request goroutine. It names the credential, its
// version and fingerprint, never its value; the logged path carries the
// app's query, which never holds the injected parameter.
func (p *Proxy) audit(ctx *fasthttp.RequestCtx, x *exchange) {
	sink := p.opts.Audit
	if sink == nil || !p.auditOn.Load() {
		return
	}
	rec := &x.rec
	b := x.line[:0]
	text := p.opts.AuditText
	b = auditStart(b, rec.start.UnixNano()+int64(rec.elapsed), text)
	b = field(b, keyMethod, ctx.Method(), text)
	path := rec.path
	if len(path) == 0 {
		path = ctx.Path()
	}
	b = field(b, keyPath, path, text)
	b = fieldInt(b, keyStatus, int64(ctx.Response.StatusCode()), text)
	b = appendMillis(appendKey(b, keyDuration, text), rec.elapsed)
	b = field(b, keyRequestID, rec.rid, text)
	b = field(b, keyTraceID, rec.traceID(), text)
	if rt := rec.route; rt != nil {
		b = appendKey(b, rt.auditFields, text)
		if rc := rec.cred; rc != nil {
			b = appendKey(b, rc.fields, text)
			if v := rec.version; v != nil {
				b = appendKey(b, rc.versionFields(v), text)
			}
		} else {
			b = appendKey(b, noCredential, text)
		}
	} else {
		b = fieldStr(b, keyRoute, "none", text)
	}
	if c := rec.caller; c != nil {
		b = appendKey(b, c.audit, text)
	}
	if x.h2 {
		b = fieldStr(b, keyProtocol, protoHTTP2, text)
	} else {
		b = field(b, keyProtocol, ctx.Request.Header.Protocol(), text)
	}
	if text {
		b = append(b, '\n')
	} else {
		b = append(b, "}\n"...)
	}
	x.line = b
	sink.Submit(b)
}

// routeFields are a route's fixed audit fields, escaped in each format.
func routeFields(rt *route) auditKey {
	return inBothFormats(func(b []byte, text bool) []byte {
		b = fieldStr(b, keyRoute, rt.name, text)
		return fieldStr(b, keyUpstream, rt.upstream, text)
	})
}

// noCredential is the credential field of a route that injects nothing.
var noCredential = inBothFormats(func(b []byte, text bool) []byte { return fieldStr(b, keyCredential, "", text) })

// inBothFormats builds a fixed piece of the audit line in each format.
func inBothFormats(build func(b []byte, text bool) []byte) auditKey {
	return auditKey{json: string(build(nil, false)), text: string(build(nil, true))}
}

// versionAudit is a credential version's audit fields (credential_version,
// fingerprint) in each format.
type versionAudit struct {
	v      *injector.Version
	fields auditKey
}

// versionFields returns v's audit fields, escaped once per version and
// route credential rather than per request: it keeps those of the last
// version it saw, rebuilt when a request holds another one.
func (rt *routeCred) versionFields(v *injector.Version) auditKey {
	if va := rt.versionAudit.Load(); va != nil && va.v == v {
		return va.fields
	}
	va := &versionAudit{v: v, fields: inBothFormats(func(b []byte, text bool) []byte {
		b = fieldInt(b, keyVersion, int64(v.Number()), text)
		return fieldStr(b, keyFingerprint, v.Fingerprint(), text)
	})}
	rt.versionAudit.Store(va)
	return va.fields
}

// auditStart opens the line, stamped with the time the request ended.
func auditStart(b []byte, end int64, text bool) []byte {
	if text {
		b = append(b, "time=\""...)
		b = appendTime(b, end)
		return append(b, "\" level=info msg=request"...)
	}
	b = append(b, `{"level":"info","msg":"request","time":"`...)
	b = appendTime(b, end)
	return append(b, '"')
}

// secondStamp caches the formatted UTC second; formatting a time is the
// most expensive part of an audit line otherwise.
type secondStamp struct {
	unix int64
	text string // "2006-01-02T15:04:05"
}

var lastSecond atomic.Pointer[secondStamp]

// appendTime appends a Unix time in nanoseconds, in UTC, as
// 2006-01-02T15:04:05.000Z.
func appendTime(b []byte, unixNano int64) []byte {
	sec, ns := unixNano/1e9, unixNano%1e9
	if ns < 0 {
		sec, ns = sec-1, ns+1e9
	}
	st := lastSecond.Load()
	if st == nil || st.unix != sec {
		st = &secondStamp{unix: sec, text: time.Unix(sec, 0).UTC().Format("2006-01-02T15:04:05")}
		lastSecond.Store(st)
	}
	b = append(b, st.text...)
	ms := ns / 1e6
	return append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// auditKey is a fixed piece of the audit line, in each format: a field's
// name as written before its value, or a route's fixed fields.
type auditKey struct{ json, text string }

func newAuditKey(name string) auditKey {
	return auditKey{json: `,"` + name + `":`, text: " " + name + "="}
}

var (
	keyMethod      = newAuditKey("method")
	keyPath        = newAuditKey("path")
	keyStatus      = newAuditKey("status")
	keyDuration    = newAuditKey("duration_ms")
	keyRequestID   = newAuditKey("request_id")
	keyTraceID     = newAuditKey("trace_id")
	keyRoute       = newAuditKey("route")
	keyUpstream    = newAuditKey("upstream")
	keyCredential  = newAuditKey("credential")
	keyVersion     = newAuditKey("credential_version")
	keyFingerprint = newAuditKey("fingerprint")
	keyCaller      = newAuditKey("caller")
	keyProtocol    = newAuditKey("protocol")
)

func appendKey(b []byte, k auditKey, text bool) []byte {
	if text {
		return append(b, k.text...)
	}
	return append(b, k.json...)
}

func field(b []byte, k auditKey, v []byte, text bool) []byte {
	return appendQuoted(appendKey(b, k, text), v)
}

func fieldStr(b []byte, k auditKey, v string, text bool) []byte {
	return appendQuotedStr(appendKey(b, k, text), v)
}

func fieldInt(b []byte, k auditKey, v int64, text bool) []byte {
	return strconv.AppendInt(appendKey(b, k, text), v, 10)
}

// appendMillis appends d in milliseconds with three decimals, as
// strconv.AppendFloat(b, ms, 'f', 3, 64) would, in integer arithmetic.
func appendMillis(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1000, 10)
	f := us % 1000
	return append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
}

// appendQuoted appends v as a JSON string (also valid logfmt): quotes,
// backslashes and control characters escaped, invalid UTF-8 replaced. Runs
// of bytes that need no escaping are appended whole.
func appendQuoted(b, v []byte) []byte {
	b = append(b, '"')
	for {
		n := plainPrefix(v)
		b = append(b, v[:n]...)
		v = v[n:]
		if len(v) == 0 {
			return append(b, '"')
		}
		if c := v[0]; c < utf8.RuneSelf {
			b = appendEscaped(b, c)
			v = v[1:]
		} else if r, size := utf8.DecodeRune(v); r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
			v = v[1:]
		} else {
			b = append(b, v[:size]...)
			v = v[size:]
		}
	}
}

func appendQuotedStr(b []byte, v string) []byte {
	// A read-only view of v: plainPrefix and appendQuoted never write to it.
	return appendQuoted(b, unsafe.Slice(unsafe.StringData(v), len(v)))
}

// plainPrefix is the length of v's leading run of plainJSON bytes, tested
// eight at a time while it lasts.
func plainPrefix(v []byte) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(v); i += 8 {
		x := binary.LittleEndian.Uint64(v[i:])
		// a byte below 0x20, a byte at or above 0x80, a quote or a backslash
		quote, backslash := x^(ones*'"'), x^(ones*'\\')
		if ((x-ones*0x20)&^x|x|(quote-ones)&^quote|(backslash-ones)&^backslash)&highs != 0 {
			break
		}
	}
	for i < len(v) && plainJSON[v[i]] {
		i++
	}
	return i
}

// plainJSON marks the bytes a JSON string holds as they are: printable
// ASCII but the quote and the backslash.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func appendEscaped(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\n':
		return append(b, `\n`...)
	case '\r':
		return append(b, `\r`...)
	case '\t':
		return append(b, `\t`...)
	}
	const hexDigits = "0123456789abcdef"
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}

// requestIDs are a per-process random prefix and a counter: unique, cheap,
// and unguessable across processes.
type requestIDs struct {
	prefix string
	seq    atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (r *requestIDs) append(dst []byte) []byte {
	dst = append(dst, r.prefix...)
	return strconv.AppendUint(dst, r.seq.Add(1), 10)
}
