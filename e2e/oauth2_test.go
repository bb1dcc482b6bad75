package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
)

// These tests put a real OAuth2 authorization server (go-oauth2) behind an
// oauth2 credential: /token issues client-credentials tokens, /revoke is
// an RFC 7009 endpoint (go-oauth2 has none), and the upstream checks every
// bearer token against the server's token store, as a resource server
// would, refusing an unknown, revoked or expired one with 401.

const oauth2ClientID = "sidekey-e2e"

// oauth2Server is the authorization server and the resource server's view
// of the tokens.
type oauth2Server struct {
	URL     string
	manager *manage.Manager
	srv     *server.Server
	exp     time.Duration

	tokenCalls  atomic.Int64 // successful /token answers
	revokeCalls atomic.Int64 // authenticated /revoke calls

	mu              sync.Mutex
	issued          map[string]time.Time // token -> when /token issued it
	revoked         map[string]time.Time // token -> when /revoke (or the test) removed it
	inflight        map[string]int       // token -> requests at the upstream now
	served          map[string]int       // token -> requests the upstream accepted
	last            string               // the token of the latest request at the upstream
	refusals        map[string]int       // why the upstream refused: revoked, expired, unknown
	revokedInFlight []string             // descriptions of revocations while a request held the token
}

// newOAuth2Server starts the server with one client whose secret is
// secret, issuing access tokens that live exp.
func newOAuth2Server(t testing.TB, secret string, exp time.Duration) *oauth2Server {
	t.Helper()
	s := &oauth2Server{
		manager:  manage.NewDefaultManager(),
		exp:      exp,
		issued:   map[string]time.Time{},
		revoked:  map[string]time.Time{},
		inflight: map[string]int{},
		served:   map[string]int{},
		refusals: map[string]int{},
	}
	s.manager.SetClientTokenCfg(&manage.Config{AccessTokenExp: exp})
	s.manager.MustTokenStorage(store.NewMemoryTokenStore())
	clients := store.NewClientStore()
	if err := clients.Set(oauth2ClientID, &models.Client{ID: oauth2ClientID, Secret: secret}); err != nil {
		t.Fatal(err)
	}
	s.manager.MapClientStorage(clients)
	s.srv = server.NewDefaultServer(s.manager)
	s.srv.Config.AllowedGrantTypes = []oauth2.GrantType{oauth2.ClientCredentials}
	s.srv.SetClientInfoHandler(server.ClientBasicHandler)

	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		if err := s.srv.HandleTokenRequest(rec, r); err != nil {
			http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
			return
		}
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		if rec.Code == http.StatusOK && json.Unmarshal(rec.Body.Bytes(), &tr) == nil && tr.AccessToken != "" {
			rememberSecret(t, tr.AccessToken) // before sidekey can see it
			s.mu.Lock()
			s.issued[tr.AccessToken] = time.Now()
			s.mu.Unlock()
			s.tokenCalls.Add(1)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	})
	mux.HandleFunc("/revoke", s.revoke)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s
}

// revoke is an RFC 7009 endpoint: it authenticates the client as /token
// does, notes whether a request is still using the token at the upstream,
// and removes the token if it is the client's. Unknown tokens get 200 too.
func (s *oauth2Server) revoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		cli, err := s.manager.GetClient(r.Context(), id)
		ok = err == nil && cli.GetSecret() == secret
	}
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	token := r.PostForm.Get("token")
	s.mu.Lock()
	if n := s.inflight[token]; n > 0 {
		s.revokedInFlight = append(s.revokedInFlight, fmt.Sprintf("a token issued %v earlier, with %d requests in flight",
			time.Since(s.issued[token]).Round(time.Millisecond), n))
	}
	if _, dup := s.revoked[token]; !dup {
		s.revoked[token] = time.Now()
	}
	s.mu.Unlock()
	if ti, err := s.manager.LoadAccessToken(r.Context(), token); err == nil && ti.GetClientID() == id {
		if err := s.manager.RemoveAccessToken(r.Context(), token); err != nil {
			http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
			return
		}
	}
	s.revokeCalls.Add(1)
	w.WriteHeader(http.StatusOK)
}

// removeBehindBack revokes token at the server without telling sidekey.
func (s *oauth2Server) removeBehindBack(t testing.TB, token string) {
	t.Helper()
	s.mu.Lock()
	s.revoked[token] = time.Now()
	s.mu.Unlock()
	if err := s.manager.RemoveAccessToken(context.Background(), token); err != nil {
		t.Fatal(err)
	}
}

// resourceServer is an upstream that accepts a request only with a bearer
// token the authorization server holds valid; it answers after delay.
func (s *oauth2Server) resourceServer(t testing.TB, delay time.Duration) *upstream {
	return newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		s.inflight[tok]++
		s.last = tok
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inflight[tok]--
			s.mu.Unlock()
		}()
		if _, err := s.manager.LoadAccessToken(r.Context(), tok); err != nil {
			s.mu.Lock()
			_, revoked := s.revoked[tok]
			issued, known := s.issued[tok]
			switch {
			case revoked:
				s.refusals["revoked"]++
			case known && time.Since(issued) >= s.exp:
				s.refusals["expired"]++
			default:
				s.refusals["unknown"]++
			}
			s.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		s.served[tok]++
		s.mu.Unlock()
		if delay > 0 {
			time.Sleep(delay)
		}
		io.WriteString(w, "ok")
	})
}

func (s *oauth2Server) lastToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// refused renders the upstream's refusals by reason ("" when none).
func (s *oauth2Server) refused() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	var parts []string
	for why, n := range s.refusals {
		total += n
		parts = append(parts, fmt.Sprintf("%d %s", n, why))
	}
	sort.Strings(parts)
	return total, strings.Join(parts, ", ")
}

// oauth2Cred is an oauth2 credential for s, its client secret in a file.
func oauth2Cred(t testing.TB, name string, s *oauth2Server, secret string, extra ...string) string {
	t.Helper()
	path := filepath.Join(dataDir(t), "client-secret")
	writeTestFile(t, path, secret+"\n")
	return credBlock(name, append([]string{
		"source: oauth2",
		"token_url: " + quote(s.URL+"/token"),
		"client_id: " + oauth2ClientID,
		"client_secret: " + quote("file:"+path),
	}, extra...))
}

// Tokens living 2 seconds are refreshed ahead of expiry (33% left, about
// every 1.3s) under 30 seconds of load on 8 connections: no request fails,
// the upstream never sees an expired token, and every superseded token is
// revoked at the RFC 7009 endpoint, each only after the requests using it
// have finished.
func TestOAuth2ShortLivedTokensUnderLoadRevokedWhenDrained(t *testing.T) {
	const (
		lifetime = 2 * time.Second
		duration = 30 * time.Second
		conns    = 8
	)
	secret := secretValue(t)
	as := newOAuth2Server(t, secret, lifetime)
	up := as.resourceServer(t, 5*time.Millisecond)
	p := startSidekey(t, configYAML(nil,
		[]string{oauth2Cred(t, "partner", as, secret, "revocation_url: "+quote(as.URL+"/revoke"))},
		[]route{{name: "partner", prefix: "/partner/", upstream: up.URL, strip: true, inject: "{credential: partner, as: bearer}"}}))
	waitOK(t, p, "/partner/ready")

	fetchesBefore := as.tokenCalls.Load()
	load := startLoad(t, p.ProxyURL, conns, []string{"/partner/a", "/partner/b?page=2"})
	time.Sleep(duration)
	load.halt()
	fetches := as.tokenCalls.Load() - fetchesBefore
	t.Logf("%d requests succeeded, %d failed; %d tokens fetched during the load", load.ok.Load(), load.fail.Load(), fetches)

	if n := load.fail.Load(); n > 0 {
		load.mu.Lock()
		t.Errorf("%d of %d requests failed; first: %s", n, n+load.ok.Load(), strings.Join(load.failures, "; "))
		load.mu.Unlock()
	}
	if n, why := as.refused(); n > 0 {
		t.Errorf("the upstream refused %d requests (%s): it must never see an expired or revoked token", n, why)
	}
	if min := int64(duration / lifetime); fetches < min {
		t.Errorf("%d tokens fetched in %v of %v tokens, want at least %d: tokens are not refreshed ahead of expiry",
			fetches, duration, lifetime, min)
	}

	// Every superseded token is revoked once drained: all but the current.
	var revoked, issued int64
	deadline := time.Now().Add(5 * time.Second)
	for {
		issued, revoked = as.tokenCalls.Load(), as.revokeCalls.Load()
		if revoked >= issued-1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if revoked < issued-1 {
		t.Errorf("%d tokens revoked at the revocation_url out of %d issued (%d superseded): superseded tokens are not revoked",
			revoked, issued, issued-1)
	}
	as.mu.Lock()
	if len(as.revokedInFlight) > 0 {
		t.Errorf("%d tokens revoked while requests still used them; first: %s", len(as.revokedInFlight), as.revokedInFlight[0])
	}
	as.mu.Unlock()
	e := credentialOf(t, p, "partner")
	if uint64(issued) != e.Rotations {
		t.Errorf("/v1/credentials counts %d rotations, the token endpoint issued %d tokens", e.Rotations, issued)
	}

	// On exit the current token is revoked too: then all of them are.
	p.asserted.Store(true)
	if code, ok := p.terminate(25 * time.Second); !ok || code != 0 {
		t.Fatalf("exit after SIGTERM: code %d (killed: %v), want 0", code, !ok)
	}
	as.mu.Lock()
	var unrevoked int
	for tok := range as.issued {
		if _, ok := as.revoked[tok]; !ok {
			unrevoked++
		}
	}
	total := len(as.issued)
	as.mu.Unlock()
	if unrevoked > 0 {
		t.Errorf("%d of %d issued tokens never revoked by the time sidekey exited", unrevoked, total)
	}
}

// The token sidekey holds is revoked at the server behind its back: the
// next burst of 8 concurrent requests gets 401s from the upstream, which
// make sidekey fetch one new token, shared by all, and retry each request
// once; the app sees only 200s.
func TestOAuth2RevokedTokenRefreshedOnceForBurst(t *testing.T) {
	t.Parallel()
	const clients = 8
	secret := secretValue(t)
	as := newOAuth2Server(t, secret, time.Minute) // no scheduled refresh during the test
	up := as.resourceServer(t, 0)
	p := startSidekey(t, configYAML(nil,
		[]string{oauth2Cred(t, "partner", as, secret)},
		[]route{{name: "partner", prefix: "/partner/", upstream: up.URL, strip: true, inject: "{credential: partner, as: bearer}"}}))
	waitOK(t, p, "/partner/ready")

	for round := 1; round <= 2; round++ {
		before := as.tokenCalls.Load()
		refusedBefore, _ := as.refused()
		current := as.lastToken()
		if current == "" {
			t.Fatal("the upstream has seen no token")
		}
		as.removeBehindBack(t, current)

		var wg sync.WaitGroup
		statuses := make([]int, clients)
		start := make(chan struct{})
		for i := range clients {
			wg.Go(func() {
				<-start
				resp, body, err := p.send(t, http.MethodGet, p.ProxyURL+"/partner/burst", nil)
				if err != nil {
					t.Errorf("round %d request %d: %v", round, i, err)
					return
				}
				statuses[i] = resp.StatusCode
				if resp.StatusCode != http.StatusOK {
					t.Errorf("round %d request %d: %d %s, want 200 after one refresh and retry", round, i, resp.StatusCode, maskSecrets(string(body)))
				}
			})
		}
		close(start)
		wg.Wait()
		if n := as.tokenCalls.Load() - before; n != 1 {
			t.Errorf("round %d: %d tokens fetched for %d concurrent 401s, want exactly 1 shared refresh", round, n, clients)
		}
		refused, why := as.refused()
		if n := refused - refusedBefore; n < 1 || n > clients {
			t.Errorf("round %d: the upstream refused %d requests (%s), want between 1 and %d: one try with the revoked token each at most",
				round, n, why, clients)
		}
		if next := as.lastToken(); next == current {
			t.Errorf("round %d: the upstream still sees the revoked token", round)
		}
	}
	if e := credentialOf(t, p, "partner"); e.Rotations != 3 || e.Version != 3 {
		t.Errorf("/v1/credentials %+v, want version 3 after 3 rotations (the first token and two refreshes)", e)
	}
}
