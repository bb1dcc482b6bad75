package telemetry

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestRedactorScrubsEveryField(t *testing.T) {
	const secret = "s3cr3t-value-123"
	r := NewRedactor()
	r.Add(secret)
	var out bytes.Buffer
	log, err := NewLogger(&out, "debug", "json", r)
	if err != nil {
		t.Fatal(err)
	}
	log.WithFields(logrus.Fields{
		"plain":  "token=" + secret,
		"err":    errors.New("bad " + secret),
		"bytes":  []byte(secret),
		"struct": struct{ V string }{secret},
	}).Debug("value " + secret)
	log.Info(`escaped "` + secret + `"`)
	if strings.Contains(out.String(), secret) {
		t.Fatalf("secret leaked: %s", strings.ReplaceAll(out.String(), secret, "<LEAK>"))
	}
	if got := strings.Count(out.String(), Mask); got < 6 {
		t.Fatalf("want at least 6 masks, got %d in %s", got, out.String())
	}
}

func TestRedactorRefCountAndOverlap(t *testing.T) {
	r := NewRedactor()
	r.Add("abcdef", "abcdefghij")
	r.Add("abcdef")
	if got := r.String("xx abcdefghij abcdef"); got != "xx "+Mask+" "+Mask {
		t.Fatalf("got %q", got)
	}
	r.Remove("abcdef")
	if got := r.String("abcdef"); got != Mask {
		t.Fatalf("after one remove: %q", got)
	}
	r.Remove("abcdef", "abcdefghij")
	if got := r.String("abcdef abcdefghij"); got != "abcdef abcdefghij" {
		t.Fatalf("after all removed: %q", got)
	}
}

func TestRedactorIgnoresShortValues(t *testing.T) {
	r := NewRedactor()
	r.Add("ec", "rsa", "true")
	if got := r.String("second rsa true"); got != "second rsa true" {
		t.Fatalf("short values masked: %q", got)
	}
}

func TestNewLoggerRejectsBadLevelAndFormat(t *testing.T) {
	r := NewRedactor()
	if _, err := NewLogger(&bytes.Buffer{}, "loud", "json", r); err == nil {
		t.Fatal("bad level accepted")
	}
	if _, err := NewLogger(&bytes.Buffer{}, "info", "xml", r); err == nil {
		t.Fatal("bad format accepted")
	}
}

func TestRedactorPrefixGroupsKeepLongestFirst(t *testing.T) {
	r := NewRedactor()
	inner := "innersecret-42"
	outer := "zz-outer-" + inner + "-tail"                              // contains inner, another prefix
	r.Add(inner, outer, "bench-aaaaaaaa", "bench-bbbbbbbb", "bench-cc") // three share a prefix
	for in, want := range map[string]string{
		"x " + outer + " y":                   "x " + Mask + " y",
		"a " + inner + " b":                   "a " + Mask + " b",
		"bench-bbbbbbbb and bench-aaaaaaaa":   Mask + " and " + Mask,
		"bench-cc bench-c bench route=bench-": Mask + " bench-c bench route=bench-",
		"nothing to see":                      "nothing to see",
	} {
		if got := r.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
		if got := string(r.Bytes([]byte(in))); got != want {
			t.Errorf("Bytes(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactorManyPrefixes(t *testing.T) {
	r := NewRedactor()
	var vals []string
	for i := 0; i < maxPrefixes+10; i++ {
		vals = append(vals, fmt.Sprintf("%03d-secret-value", i))
	}
	r.Add(vals...)
	for _, v := range []string{vals[0], vals[maxPrefixes+9]} {
		if got := r.String("k=" + v); got != "k="+Mask {
			t.Errorf("String with %d prefixes: %q", len(vals), got)
		}
	}
}

// BenchmarkRedactorRotate is one rotation as the redactor sees it: a new
// value of a credential added, the oldest of the nine kept removed.
func BenchmarkRedactorRotate(b *testing.B) {
	r := NewRedactor()
	value := func(i int) string { return fmt.Sprintf("bench-%032x", i) }
	for i := range 9 {
		r.Add(value(i))
	}
	vals := make([]string, b.N+9)
	for i := range vals {
		vals[i] = value(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Add(vals[i+9])
		r.Remove(vals[i])
	}
}

func TestRedactorPending(t *testing.T) {
	r := NewRedactor()
	r.Add("secret-value-1", "other-secret")
	for b, want := range map[string]int{
		"":                       0,
		"nothing here":           0,
		"data: sec":              3,
		"data: secret-value-":    13,
		"data: secret-value-1":   0, // whole: the scrub masks it, nothing is pending
		"x other-s":              7,
		"secret-value-1 and oth": 3,
		"s":                      1,
		"data: event\n\n":        0,
	} {
		if got := r.Pending([]byte(b)); got != want {
			t.Errorf("Pending(%q) = %d, want %d", b, got, want)
		}
	}
}

func TestRedactorContains(t *testing.T) {
	r := NewRedactor()
	r.Add("secret-value-1", "secret-other", "zzzzzz")
	for b, want := range map[string]bool{
		"": false, "short": false, "a secret-value-1 here": true, "secret-value-": false,
		"x secret-other": true, "secret-": false, "zzzzz": false, "azzzzzzb": true,
	} {
		if got := r.Contains([]byte(b)); got != want || got != (r.String(b) != b) {
			t.Errorf("Contains(%q) = %v, want %v (String %q)", b, got, want, r.String(b))
		}
	}
	if n := testing.AllocsPerRun(100, func() { r.Contains([]byte("no secret in this header value")) }); n != 0 {
		t.Errorf("Contains allocates %v times", n)
	}
}
