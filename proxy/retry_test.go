package proxy

import (
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

func TestUnauthorizedRefreshesOnceAndRetries(t *testing.T) {
	up := &tokenUpstream{}
	u := up.start(t)
	e := &env{}
	e.set("TOKEN", "old")
	base := startProxy(t, e, testRoute("r", "/r/", u, &config.Inject{Credential: "cred", As: "bearer"}))
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
	up.mu.Lock()
	defer up.mu.Unlock()
	if got := up.saw[len(up.saw)-1]; got != "new|payload" {
		t.Fatalf("retry sent %q, want the new token and the same body", got)
	}
}

func TestSecondUnauthorizedGoesToApp(t *testing.T) {
	up := &tokenUpstream{} // accepts nothing
	u := up.start(t)
	e := &env{}
	e.set("TOKEN", "a")
	base := startProxy(t, e, testRoute("r", "/r/", u, &config.Inject{Credential: "cred", As: "bearer"}))
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
