package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// audit writes the canonical line for one request (SPEC "Log lines") into a
// pooled buffer, without reflection, and hands it to the sink, which batches,
// scrubs and writes it off the request goroutine. It names the credential, its
// version and fingerprint, never its value; the logged path carries the
// app's query, which never holds the injected parameter.
func (p *Proxy) audit(ctx *fasthttp.RequestCtx, x *exchange, now time.Time) {
	sink := p.opts.Audit
	if sink == nil || !p.auditOn.Load() {
		return
	}
	rec := &x.rec
	b := x.line[:0]
	text := p.opts.AuditText
	b = auditStart(b, now, text)
	b = field(b, "method", ctx.Method(), text)
	path := rec.path
	if len(path) == 0 {
		path = ctx.Path()
	}
	b = field(b, "path", path, text)
	b = fieldInt(b, "status", int64(ctx.Response.StatusCode()), text)
	b = fieldMillis(b, "duration_ms", now.Sub(rec.start), text)
	b = field(b, "request_id", rec.rid, text)
	b = field(b, "trace_id", rec.traceID(), text)
	if rt := rec.route; rt != nil {
		b = fieldStr(b, "route", rt.name, text)
		b = fieldStr(b, "upstream", rt.upstream, text)
		b = fieldStr(b, "credential", rt.credential, text)
		if v := rec.version; v != nil {
			b = fieldInt(b, "credential_version", int64(v.Number()), text)
			b = fieldStr(b, "fingerprint", v.Fingerprint(), text)
		}
	} else {
		b = fieldStr(b, "route", "none", text)
	}
	if text {
		b = append(b, '\n')
	} else {
		b = append(b, "}\n"...)
	}
	x.line = b
	sink.Submit(b)
}

func auditStart(b []byte, now time.Time, text bool) []byte {
	if text {
		b = append(b, "time=\""...)
		b = appendTime(b, now)
		return append(b, "\" level=info msg=request"...)
	}
	b = append(b, `{"level":"info","msg":"request","time":"`...)
	b = appendTime(b, now)
	return append(b, '"')
}

// secondStamp caches the formatted UTC second; formatting a time is the
// most expensive part of an audit line otherwise.
type secondStamp struct {
	unix int64
	text string // "2006-01-02T15:04:05"
}

var lastSecond atomic.Pointer[secondStamp]

// appendTime appends now in UTC as 2006-01-02T15:04:05.000Z.
func appendTime(b []byte, now time.Time) []byte {
	now = now.UTC()
	sec := now.Unix()
	st := lastSecond.Load()
	if st == nil || st.unix != sec {
		st = &secondStamp{unix: sec, text: now.Format("2006-01-02T15:04:05")}
		lastSecond.Store(st)
	}
	b = append(b, st.text...)
	ms := now.Nanosecond() / 1e6
	return append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

func field(b []byte, k string, v []byte, text bool) []byte {
	if text {
		b = append(append(append(b, ' '), k...), '=')
		return appendQuoted(b, v)
	}
	b = append(append(append(b, ",\""...), k...), "\":"...)
	return appendQuoted(b, v)
}

func fieldStr(b []byte, k, v string, text bool) []byte {
	if text {
		b = append(append(append(b, ' '), k...), '=')
		return appendQuotedStr(b, v)
	}
	b = append(append(append(b, ",\""...), k...), "\":"...)
	return appendQuotedStr(b, v)
}

func fieldInt(b []byte, k string, v int64, text bool) []byte {
	if text {
		b = append(append(append(b, ' '), k...), '=')
	} else {
		b = append(append(append(b, ",\""...), k...), "\":"...)
	}
	return strconv.AppendInt(b, v, 10)
}

func fieldMillis(b []byte, k string, d time.Duration, text bool) []byte {
	if text {
		b = append(append(append(b, ' '), k...), '=')
	} else {
		b = append(append(append(b, ",\""...), k...), "\":"...)
	}
	return appendMillis(b, d)
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
// backslashes and control characters escaped, invalid UTF-8 replaced.
func appendQuoted(b, v []byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(v); {
		c := v[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = appendEscaped(b, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(v[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, v[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

func appendQuotedStr(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return appendQuoted(b, []byte(v))
		}
	}
	return append(append(append(b, '"'), v...), '"')
}

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
