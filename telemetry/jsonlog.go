package telemetry

import (
	"bytes"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// jsonFormatter writes exactly what logrus.JSONFormatter writes (one JSON
// object per line, keys sorted, HTML characters escaped) without going
// through encoding/json's reflection, for the value types sidekey logs:
// strings, errors, booleans, int, int64, uint64 and nil. An entry with any
// other value type, a field named like a built-in key, or caller
// information is handed to logrus's own formatter. One difference remains: logrus drops a field
// whose value is a function and reports it under "logrus_error", which only
// its own formatter can see; sidekey logs no functions.
//
// A credential rotated every few milliseconds logs a line each time; through
// encoding/json that line cost several times the work of the rotation
// itself, and its code evicted the request path's from the caches.
type jsonFormatter struct {
	std logrus.JSONFormatter // TimestampFormat is used by both paths
}

// maxFastFields bounds the fields the fast path sorts on the stack.
const maxFastFields = 16

func (f *jsonFormatter) Format(e *logrus.Entry) ([]byte, error) {
	if !f.fast(e) {
		return f.std.Format(e)
	}
	var keysBuf [maxFastFields + 3]string
	keys := append(keysBuf[:0], logrus.FieldKeyLevel, logrus.FieldKeyMsg, logrus.FieldKeyTime)
	for k := range e.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	b := e.Buffer
	if b == nil {
		b = new(bytes.Buffer)
	}
	out := b.AvailableBuffer()
	out = append(out, '{')
	for i, k := range keys {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendJSONString(out, k)
		out = append(out, ':')
		switch k {
		case logrus.FieldKeyLevel:
			out = appendJSONString(out, e.Level.String())
		case logrus.FieldKeyMsg:
			out = appendJSONString(out, e.Message)
		case logrus.FieldKeyTime:
			out = append(out, '"')
			out = e.Time.AppendFormat(out, f.std.TimestampFormat) // no character a layout emits needs escaping
			out = append(out, '"')
		default:
			out = appendJSONValue(out, e.Data[k])
		}
	}
	out = append(out, '}', '\n')
	b.Write(out)
	return b.Bytes(), nil
}

// fast reports whether the entry holds only what the fast path renders the
// way encoding/json would.
func (f *jsonFormatter) fast(e *logrus.Entry) bool {
	if e.HasCaller() || len(e.Data) > maxFastFields || f.std.DisableTimestamp || f.std.TimestampFormat == "" ||
		f.std.DataKey != "" || f.std.FieldMap != nil || f.std.PrettyPrint || f.std.DisableHTMLEscape {
		return false
	}
	for k, v := range e.Data {
		switch k {
		case logrus.FieldKeyLevel, logrus.FieldKeyMsg, logrus.FieldKeyTime, logrus.FieldKeyLogrusError:
			return false // renamed "fields.<key>" by logrus
		}
		switch v.(type) {
		case nil, string, error, bool, int, int64, uint64: // appendJSONValue's cases
		default:
			return false
		}
	}
	return true
}

func appendJSONValue(out []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(out, "null"...)
	case string:
		return appendJSONString(out, x)
	case error:
		return appendJSONString(out, x.Error())
	case bool:
		return strconv.AppendBool(out, x)
	case int:
		return strconv.AppendInt(out, int64(x), 10)
	case int64:
		return strconv.AppendInt(out, x, 10)
	case uint64: // versions
		return strconv.AppendUint(out, x, 10)
	}
	panic("telemetry: jsonFormatter: unchecked value type") // fast() admits only the types above
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does with HTML escaping on:
// \" \\ \b \f \n \r \t, other control characters and < > & as \u00XX,
// invalid UTF-8 as \ufffd, and U+2028 and U+2029 escaped.
func appendJSONString(out []byte, s string) []byte {
	out = append(out, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			out = append(out, s[start:i]...)
			switch c {
			case '"', '\\':
				out = append(out, '\\', c)
			case '\b':
				out = append(out, '\\', 'b')
			case '\f':
				out = append(out, '\\', 'f')
			case '\n':
				out = append(out, '\\', 'n')
			case '\r':
				out = append(out, '\\', 'r')
			case '\t':
				out = append(out, '\\', 't')
			default:
				out = append(out, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			out = append(out, s[start:i]...)
			out = append(out, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			out = append(out, s[start:i]...)
			out = append(out, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	out = append(out, s[start:]...)
	return append(out, '"')
}
