package proxy

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendMillisMatchesAppendFloat(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 999 * time.Microsecond, time.Millisecond,
		1234567 * time.Nanosecond, 90 * time.Second, -1500 * time.Microsecond, 1<<62 + 12345} {
		want := strconv.AppendFloat(nil, float64(d.Microseconds())/1000, 'f', 3, 64)
		if got := appendMillis(nil, d); string(got) != string(want) {
			t.Errorf("%v: got %s, want %s", d, got, want)
		}
	}
}

// FuzzAppendQuoted: the quoted form is a JSON string that reads back as the
// input, each byte of invalid UTF-8 read as U+FFFD, and the string form of
// the function agrees with the byte form.
func FuzzAppendQuoted(f *testing.F) {
	for _, s := range []string{"", "/api/items?x=1", `a"b\c`, "tab\there\nnl\r\x00\x1f\x7f", "héllo ✓ 𝄞",
		"bad\xffutf8\xc3", "\xe2\x80", "<script>&amp;", "\u2028\u2029"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendQuoted([]byte("x"), []byte(s))
		if got[0] != 'x' {
			t.Fatalf("prefix lost: %q", got)
		}
		var back string
		if err := json.Unmarshal(got[1:], &back); err != nil {
			t.Fatalf("%q quoted as %s: not a JSON string: %v", s, got[1:], err)
		}
		var want strings.Builder
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			want.WriteRune(r) // RuneError for one invalid byte, n == 1
			i += n
		}
		if back != want.String() {
			t.Fatalf("%q read back as %q, want %q", s, back, want.String())
		}
		if str := appendQuotedStr([]byte("x"), s); string(str) != string(got) {
			t.Fatalf("appendQuotedStr %s, appendQuoted %s", str, got)
		}
	})
}
