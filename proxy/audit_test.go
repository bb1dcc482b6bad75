package proxy

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
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
		"bad\xffutf8\xc3", "\xe2\x80", "<script>&amp;", "\u2028\u2029",
		"/a/long/path/with\"a/quote/in/it", "0123456789\x01abcdefgh", "aaaaaaaa\\bbbbbbbb", "abcdefgh\x80ijklmnop"} {
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

// TestAuditLine: the whole line in both formats, the route's fields escaped
// once when the route is built.
func TestAuditLine(t *testing.T) {
	rt := &route{name: `r"1`, upstream: "http://up.local/base"}
	rt.auditFields = routeFields(rt)
	rc, _ := newRouteCred("cred", holderMap{"cred": &injector.Holder{Name: "cred"}})
	cl := &caller{name: "ci-runner"}
	cl.audit = inBothFormats(func(b []byte, text bool) []byte { return fieldStr(b, keyCaller, cl.name, text) })
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		text bool
		want string
	}{
		{false, `{"level":"info","msg":"request","time":"2026-01-02T03:04:05.012Z","method":"GET","path":"/a?b=1",` +
			`"status":200,"duration_ms":12.345,"request_id":"id-1","trace_id":"","route":"r\"1",` +
			`"upstream":"http://up.local/base","credential":"cred","caller":"ci-runner","protocol":"HTTP/1.1"}` + "\n"},
		{true, `time="2026-01-02T03:04:05.012Z" level=info msg=request method="GET" path="/a?b=1" status=200 ` +
			`duration_ms=12.345 request_id="id-1" trace_id="" route="r\"1" upstream="http://up.local/base" credential="cred" ` +
			`caller="ci-runner" protocol="HTTP/1.1"` + "\n"},
	} {
		rec := record{start: start, elapsed: 12345 * time.Microsecond, route: rt, cred: rc, caller: cl,
			path: []byte("/a?b=1"), rid: []byte("id-1")}
		if got := auditOnce(tc.text, rec); got != tc.want {
			t.Errorf("text=%v:\n got %s\nwant %s", tc.text, got, tc.want)
		}
	}
}

// auditOnce returns the audit line of a GET answered 200 with rec.
func auditOnce(text bool, rec record) string {
	var out strings.Builder
	sink := telemetry.NewLineSink(&out, nil, 1<<16, 0)
	p := &Proxy{opts: Options{Audit: sink, AuditText: text}}
	p.auditOn.Store(true)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Response.SetStatusCode(200)
	p.audit(&ctx, &exchange{rec: rec})
	sink.Close()
	return out.String()
}

// TestAuditLineNamesTheVersionHeld checks that the version fields a route
// keeps for the last version it saw follow each request's own version,
// also when an older one, still held, comes back after a newer one.
func TestAuditLineNamesTheVersionHeld(t *testing.T) {
	value := "first-value"
	h := &injector.Holder{Name: "c", Source: &injector.EnvSource{Name: "T",
		Lookup: func(string) (string, bool) { return value, true }}}
	acquire := func() *injector.Version {
		t.Helper()
		if err := h.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		v, err := h.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v1 := acquire()
	value = "second-value"
	v2 := acquire()
	if v1.Number() == v2.Number() || v1.Fingerprint() == v2.Fingerprint() {
		t.Fatalf("two values share a version: %d %q, %d %q", v1.Number(), v1.Fingerprint(), v2.Number(), v2.Fingerprint())
	}
	rt := &route{name: "r", upstream: "http://up.local"}
	rt.auditFields = routeFields(rt)
	rc, _ := newRouteCred("c", holderMap{"c": h})
	for _, v := range []*injector.Version{v1, v2, v2, v1} {
		line := auditOnce(false, record{start: time.Now(), route: rt, cred: rc, version: v})
		var e struct {
			Version     uint64 `json:"credential_version"`
			Fingerprint string `json:"fingerprint"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if e.Version != v.Number() || e.Fingerprint != v.Fingerprint() {
			t.Errorf("line names version %d %q, the request held %d %q", e.Version, e.Fingerprint, v.Number(), v.Fingerprint())
		}
	}
}

// TestPlainPrefix puts each byte value at each place of a run of plain
// bytes: the word-at-a-time test must stop exactly where the table does.
func TestPlainPrefix(t *testing.T) {
	for c := 0; c < 256; c++ {
		for at := 0; at < 20; at++ {
			v := []byte(strings.Repeat("a", 20))
			v[at] = byte(c)
			want := len(v)
			if !plainJSON[c] {
				want = at
			}
			if got := plainPrefix(v); got != want {
				t.Fatalf("byte %#x at %d: plainPrefix %d, want %d", c, at, got, want)
			}
		}
	}
}

// holderMap is a Holders of fixed holders.
type holderMap map[string]*injector.Holder

func (m holderMap) Holder(name string) *injector.Holder { return m[name] }
