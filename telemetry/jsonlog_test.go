package telemetry

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

const testTimestamp = "2006-01-02T15:04:05.000Z07:00"

// formatBoth renders e with the fast formatter and with logrus's own.
func formatBoth(t testing.TB, e *logrus.Entry) (fast, std []byte) {
	t.Helper()
	f := &jsonFormatter{std: logrus.JSONFormatter{TimestampFormat: testTimestamp}}
	e.Buffer = new(bytes.Buffer)
	got, err := f.Format(e)
	if err != nil {
		t.Fatalf("fast Format: %v", err)
	}
	fast = bytes.Clone(got)
	e.Buffer = nil
	want, err := f.std.Format(e)
	if err != nil {
		t.Fatalf("logrus Format: %v", err)
	}
	return fast, want
}

func entry(msg string, data logrus.Fields) *logrus.Entry {
	return &logrus.Entry{
		Logger:  logrus.New(),
		Data:    data,
		Time:    time.Date(2026, 11, 23, 3, 4, 5, 678_000_000, time.UTC),
		Level:   logrus.InfoLevel,
		Message: msg,
	}
}

func TestJSONFormatterMatchesLogrus(t *testing.T) {
	cases := map[string]*logrus.Entry{
		"rotation": entry("credential rotated", logrus.Fields{
			"credential": "upstream", "expires_at": "never", "old_version": uint64(3), "new_version": uint64(4)}),
		"error and ints": entry("credential fetch failed", logrus.Fields{
			"credential": "api", "error": errors.New(`token endpoint said "no" <html> & more`),
			"retry_in": "1.5s", "n": -7, "i64": int64(-1 << 62), "i32": int32(5), "u": uint(9), "u32": uint32(10)}),
		"bool and nil":  entry("listening", logrus.Fields{"tls": true, "ok": false, "none": nil}),
		"no fields":     entry("ready", nil),
		"escapes":       entry("a\"b\\c\b\f\n\r\t\x00\x1f<>&\u2028\u2029é\xff\xfe日本", logrus.Fields{"k\n<": "v\x7f\u00a0"}),
		"clashing keys": entry("m", logrus.Fields{"msg": "user", "time": 1, "level": "x", "logrus_error": "y"}),
		"other types":   entry("m", logrus.Fields{"d": time.Second, "f": 1.5, "b": []byte("x"), "m": map[string]int{"a": 1}}),
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			fast, std := formatBoth(t, e)
			if !bytes.Equal(fast, std) {
				t.Errorf("fast formatter wrote\n%s\nlogrus wrote\n%s", fast, std)
			}
		})
	}
}

// The fast path is the one taken for sidekey's usual lines.
func TestJSONFormatterFastPath(t *testing.T) {
	f := &jsonFormatter{std: logrus.JSONFormatter{TimestampFormat: testTimestamp}}
	if !f.fast(entry("credential rotated", logrus.Fields{"credential": "a", "new_version": uint64(1), "error": errors.New("x")})) {
		t.Error("a rotation line does not take the fast path")
	}
	for name, e := range map[string]*logrus.Entry{
		"float":    entry("m", logrus.Fields{"f": 1.5}),
		"duration": entry("m", logrus.Fields{"d": time.Second}),
		"clash":    entry("m", logrus.Fields{"msg": "x"}),
	} {
		if f.fast(e) {
			t.Errorf("%s: took the fast path", name)
		}
	}
}

func FuzzJSONFormatterMatchesLogrus(f *testing.F) {
	f.Add("credential rotated", "credential", "upstream", int64(3), uint64(4), true)
	f.Add("a\"<\u2028\xff", "k\x01&", "v\\\t>", int64(-1), uint64(0), false)
	f.Fuzz(func(t *testing.T, msg, key, val string, n int64, u uint64, b bool) {
		e := entry(msg, logrus.Fields{key: val, "n": n, "u": u, "b": b, "err": errors.New(val + key)})
		fast, std := formatBoth(t, e)
		if !bytes.Equal(fast, std) {
			t.Errorf("fast formatter wrote\n%q\nlogrus wrote\n%q", fast, std)
		}
	})
}

func BenchmarkJSONFormatter(b *testing.B) {
	f := &jsonFormatter{std: logrus.JSONFormatter{TimestampFormat: testTimestamp}}
	e := entry("credential rotated", logrus.Fields{
		"credential": "upstream", "expires_at": "never", "old_version": uint64(3), "new_version": uint64(4)})
	e.Buffer = new(bytes.Buffer)
	b.ReportAllocs()
	for b.Loop() {
		e.Buffer.Reset()
		if _, err := f.Format(e); err != nil {
			b.Fatal(err)
		}
	}
}
