package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sidekey/sidekey/config"
)

// tokenUpstream accepts only the bearer token in valid; it counts requests
// and records the tokens it saw.
type tokenUpstream struct {
	valid atomic.Pointer[string]
	hits  atomic.Int64
	mu    sync.Mutex
	saw   []string
}

func (u *tokenUpstream) start(t *testing.T) *url.URL {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.saw = append(u.saw, tok+"|"+string(body))
		u.mu.Unlock()
		if v := u.valid.Load(); v == nil || *v != tok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	up, _ := url.Parse(srv.URL)
	return up
}

// last is the token and body of the last request the upstream saw.
func (u *tokenUpstream) last() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.saw[len(u.saw)-1]
}

// startTokenProxy starts a tokenUpstream that accepts no token yet and a
// proxy in front of it injecting the env credential, which starts as token.
func startTokenProxy(t *testing.T, token string) (*tokenUpstream, *env, string) {
	t.Helper()
	up := &tokenUpstream{}
	u := up.start(t)
	e := &env{}
	e.set("TOKEN", token)
	return up, e, startProxy(t, e, testRoute("r", "/r/", u, &config.Inject{Credential: "cred", As: "bearer"}))
}

func TestUnauthorizedRefreshesOnceAndRetries(t *testing.T) {
	up, e, base := startTokenProxy(t, "old")
	// Load "old" first: a request with it gets 401 and, the value being
	// unchanged, no retry.
	req, _ := http.NewRequest("POST", base+"/r/x", strings.NewReader("payload"))
	resp := get(t, req, http.StatusUnauthorized)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || up.hits.Load() != 1 {
		t.Fatalf("unchanged value: status %d, upstream hits %d, want 401 and 1", resp.StatusCode, up.hits.Load())
	}
	// The issuer rotated behind sidekey's back: the old token is dead, the
	// source now has a new one. One 401, one refresh, one retry, 200.
	up.hits.Store(0)
	newTok := "new"
	up.valid.Store(&newTok)
	e.set("TOKEN", "new")
	req, _ = http.NewRequest("POST", base+"/r/x", strings.NewReader("payload"))
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || up.hits.Load() != 2 {
		t.Fatalf("status %d, upstream hits %d, want 200 after one retry", resp.StatusCode, up.hits.Load())
	}
	if got := up.last(); got != "new|payload" {
		t.Fatalf("retry sent %q, want the new token and the same body", got)
	}
}

func TestSecondUnauthorizedGoesToApp(t *testing.T) {
	up, e, base := startTokenProxy(t, "a") // the upstream accepts nothing
	req, _ := http.NewRequest("GET", base+"/r/x", nil)
	get(t, req, http.StatusUnauthorized).Body.Close()
	up.hits.Store(0)
	e.set("TOKEN", "b") // a new value, also refused
	resp, err := http.DefaultTransport.RoundTrip(req.Clone(req.Context()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || up.hits.Load() != 2 {
		t.Fatalf("status %d, upstream hits %d, want 401 after exactly one retry", resp.StatusCode, up.hits.Load())
	}
}

// A body of known length up to 64 KiB, empty included, is read whole and
// sent again, whole, after a 401; a larger body streams and is never sent
// again, so the 401 goes to the app. The 20 and 60 KiB bodies are longer
// than what fasthttp reads with the headers.
func TestUnauthorizedRetrySendsTheWholeBody(t *testing.T) {
	up, e, base := startTokenProxy(t, "t0")
	get(t, mustRequest(t, "GET", base+"/r/x", ""), http.StatusUnauthorized).Body.Close() // "t0" loaded
	for i, tc := range []struct {
		size    int
		retried bool
	}{{0, true}, {7, true}, {20 << 10, true}, {60 << 10, true}, {64 << 10, true}, {64<<10 + 1, false}, {200 << 10, false}} {
		body := strings.Repeat(string(rune('a'+i)), tc.size)
		tok := fmt.Sprintf("t%d", i+1)
		up.valid.Store(&tok)
		e.set("TOKEN", tok) // the source has a new value; sidekey still holds the old one
		up.hits.Store(0)
		resp, err := http.DefaultTransport.RoundTrip(mustRequest(t, "POST", base+"/r/x", body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		last := up.last()
		switch {
		case tc.retried && (resp.StatusCode != http.StatusOK || up.hits.Load() != 2 || last != tok+"|"+body):
			t.Errorf("%d bytes: status %d, %d upstream hits, last body %d bytes; want 200 after one retry of the whole body",
				tc.size, resp.StatusCode, up.hits.Load(), len(last)-len(tok)-1)
		case !tc.retried && (resp.StatusCode != http.StatusUnauthorized || up.hits.Load() != 1 || last != "t"+fmt.Sprint(i)+"|"+body):
			t.Errorf("%d bytes: status %d, %d upstream hits, last body %d bytes; want the 401 of the one streamed try",
				tc.size, resp.StatusCode, up.hits.Load(), len(last))
		}
		if !tc.retried { // load the new value for the next case
			get(t, mustRequest(t, "GET", base+"/r/x", ""), http.StatusOK).Body.Close()
		}
	}
}

func mustRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}
