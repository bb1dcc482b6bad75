package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestPayloadIs64Bytes(t *testing.T) {
	if len(payload) != 64 {
		t.Fatalf("payload is %d bytes", len(payload))
	}
}

func TestTokenSet(t *testing.T) {
	s := newTokenSet(5 * time.Second)
	s.add("static", 0)
	s.add("old", int64(1*time.Second))
	s.add("new", int64(7*time.Second)) // drops "old": issued 6 s before
	now := int64(8 * time.Second)
	for tok, want := range map[string]bool{"static": true, "new": true, "old": false, "other": false} {
		if got := s.valid([]byte(tok), now); got != want {
			t.Errorf("valid(%q) = %v, want %v", tok, got, want)
		}
	}
	if s.valid([]byte("new"), int64(13*time.Second)) {
		t.Error("a token is valid past its window")
	}
}

// TestIssue: the file never names a token the set does not hold.
func TestIssue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	is := &issuer{set: newTokenSet(time.Minute), path: path}
	for i := 0; i < 3; i++ {
		if err := is.issue(time.Now()); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !is.set.valid([]byte(strings.TrimSpace(string(b))), time.Now().UnixNano()) {
			t.Fatalf("issued token %q is not valid", b)
		}
	}
	if is.count.Load() != 3 {
		t.Fatalf("count = %d", is.count.Load())
	}
}

func TestHandle(t *testing.T) {
	u := &upstream{set: newTokenSet(time.Minute), issuer: &issuer{}, bodyLen: 4}
	u.set.add("good", 0)
	for _, tc := range []struct {
		auth, body string
		want       int
	}{
		{"Bearer good", "abcd", 200},
		{"Bearer bad", "abcd", 401},
		{"good", "abcd", 401},
		{"", "abcd", 401},
		{"Bearer good", "abc", 400},
	} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(fasthttp.MethodPost)
		ctx.Request.SetRequestURI("/v1/items")
		if tc.auth != "" {
			ctx.Request.Header.Set(fasthttp.HeaderAuthorization, tc.auth)
		}
		ctx.Request.SetBodyString(tc.body)
		u.handle(&ctx)
		if got := ctx.Response.StatusCode(); got != tc.want {
			t.Errorf("%q %q: status %d, want %d", tc.auth, tc.body, got, tc.want)
		}
	}
	st := u.stats()
	if st.OK != 1 || st.Unauthorized != 3 || st.BadBody != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestIssueTo: switched to idle, the issued tokens go to the idle file and
// the rotate file keeps its last token; switched back, they go to it again.
func TestIssueTo(t *testing.T) {
	dir := t.TempDir()
	rotate, idle := filepath.Join(dir, "token"), filepath.Join(dir, "issued")
	set := newTokenSet(time.Minute)
	u := &upstream{set: set, issuer: &issuer{set: set, path: rotate, idlePath: idle}}
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	switchTo := func(file string, want int) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(fasthttp.MethodPost)
		ctx.Request.SetRequestURI("/_issue-to?file=" + file)
		u.handle(&ctx)
		if got := ctx.Response.StatusCode(); got != want {
			t.Fatalf("file=%s: status %d, want %d", file, got, want)
		}
	}
	issue := func() {
		t.Helper()
		if err := u.issuer.issue(time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	issue()
	first := read(rotate)
	switchTo("idle", fasthttp.StatusNoContent)
	issue()
	if got := read(rotate); got != first {
		t.Fatalf("idle: the rotate file changed from %q to %q", first, got)
	}
	if got := read(idle); got == first {
		t.Fatal("idle: the idle file holds the rotate file's token")
	}
	switchTo("rotate", fasthttp.StatusNoContent)
	issue()
	if got := read(rotate); got == first {
		t.Fatal("rotate: the rotate file did not change")
	}
	switchTo("other", fasthttp.StatusBadRequest)
	u.issuer.idlePath = ""
	switchTo("idle", fasthttp.StatusConflict)
}
