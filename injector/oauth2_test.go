package injector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-oauth2/oauth2/v4"
	oauth2errors "github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"

	"github.com/sidekey/sidekey/config"
)

const testClientID = "sidekey-test"

// oauth2Server is a real OAuth2 authorization server (go-oauth2) on
// loopback: /token issues client-credentials tokens, /check validates a
// bearer token and answers its scope, and /revoke is a small RFC 7009
// endpoint, since go-oauth2 has none.
type oauth2Server struct {
	URL     string
	manager *manage.Manager
	clients *store.ClientStore
	srv     *server.Server

	revokes atomic.Int64
	revoked chan revocation
}

// revocation is one token the /revoke endpoint removed; live says whether
// it was still valid just before.
type revocation struct {
	token string
	live  bool
}

// clientInfo picks how the server reads client credentials.
type clientInfo func(*http.Request) (string, string, error)

func newOAuth2Server(t *testing.T, info clientInfo, secret string, exp time.Duration) *oauth2Server {
	t.Helper()
	s := &oauth2Server{
		manager: manage.NewDefaultManager(),
		clients: store.NewClientStore(),
		revoked: make(chan revocation, 100),
	}
	s.manager.SetClientTokenCfg(&manage.Config{AccessTokenExp: exp})
	s.manager.MustTokenStorage(store.NewMemoryTokenStore())
	s.setSecret(secret)
	s.manager.MapClientStorage(s.clients)
	s.srv = server.NewDefaultServer(s.manager)
	s.srv.Config.AllowedGrantTypes = []oauth2.GrantType{oauth2.ClientCredentials}
	s.srv.SetClientInfoHandler(server.ClientInfoHandler(info))
	s.srv.SetInternalErrorHandler(func(err error) *oauth2errors.Response {
		t.Logf("oauth2 server: %v", err)
		return nil
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		s.srv.HandleTokenRequest(w, r)
	})
	mux.HandleFunc("/check", func(w http.ResponseWriter, r *http.Request) {
		ti, err := s.srv.ValidationBearerToken(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, ti.GetScope())
	})
	mux.HandleFunc("/revoke", s.revoke)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s
}

// setSecret sets (or rotates) the client's secret.
func (s *oauth2Server) setSecret(secret string) {
	s.clients.Set(testClientID, &models.Client{ID: testClientID, Secret: secret})
}

// revoke is an RFC 7009 endpoint: it authenticates the client like the
// token endpoint does and removes the token if it is the client's.
func (s *oauth2Server) revoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	id, secret, err := s.srv.ClientInfoHandler(r)
	if err == nil {
		var cli oauth2.ClientInfo
		cli, err = s.manager.GetClient(r.Context(), id)
		if err == nil && cli.GetSecret() != secret {
			err = oauth2errors.ErrInvalidClient
		}
	}
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	token := r.PostForm.Get("token")
	ti, err := s.manager.LoadAccessToken(r.Context(), token)
	live := err == nil
	if live && ti.GetClientID() == id {
		if err := s.manager.RemoveAccessToken(r.Context(), token); err != nil {
			http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
			return
		}
	}
	s.revokes.Add(1)
	select {
	case s.revoked <- revocation{token: token, live: live}:
	default: // nobody watches this server's revocations
	}
	w.WriteHeader(http.StatusOK) // also for unknown tokens (RFC 7009 §2.2)
}

// check reports whether the server accepts token.
func (s *oauth2Server) check(t *testing.T, token string) (scope string, ok bool) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/check", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("check: %v", err) // may run on another goroutine than the test's
		return "", false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode == http.StatusOK
}

// source returns an OAuth2Source for the server with a fixed client secret.
func (s *oauth2Server) source(style, secret string) *OAuth2Source {
	return &OAuth2Source{
		TokenURL:      s.URL + "/token",
		RevocationURL: s.URL + "/revoke",
		ClientID:      testClientID,
		ClientSecret:  EnvSource{Name: "SECRET", Lookup: func(string) (string, bool) { return secret, true }},
		AuthStyle:     style,
		HTTPClient:    &http.Client{Timeout: 5 * time.Second},
	}
}

// randomSecret draws a client secret for one test.
func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	return "cs-" + hex.EncodeToString(b)
}

// rfc6749Basic reads HTTP Basic client credentials form-decoded, as RFC
// 6749 §2.3.1 has them sent.
func rfc6749Basic(r *http.Request) (string, string, error) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		return "", "", oauth2errors.ErrInvalidClient
	}
	id, err1 := url.QueryUnescape(id)
	secret, err2 := url.QueryUnescape(secret)
	if err1 != nil || err2 != nil {
		return "", "", oauth2errors.ErrInvalidClient
	}
	return id, secret, nil
}

func TestOAuth2Fetch(t *testing.T) {
	tests := []struct {
		name   string
		style  string
		info   clientInfo
		secret func(*testing.T) string
	}{
		{"basic", AuthStyleBasic, server.ClientBasicHandler, randomSecret},
		{"default is basic", "", server.ClientBasicHandler, randomSecret},
		{"post", AuthStylePost, server.ClientFormHandler, randomSecret},
		{"basic form-encodes the secret", AuthStyleBasic, rfc6749Basic,
			func(t *testing.T) string { return randomSecret(t) + " +%&=:/?é" }},
		{"post with special characters", AuthStylePost, server.ClientFormHandler,
			func(t *testing.T) string { return randomSecret(t) + " +%&=:/?é" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := tt.secret(t)
			as := newOAuth2Server(t, tt.info, secret, 2*time.Second)
			src := as.source(tt.style, secret)
			src.Scopes = []string{"payments.read", "payments.write"}
			before := time.Now()
			s, err := src.Fetch(context.Background())
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			after := time.Now()
			if s.Value == "" || s.Handle != s.Value {
				t.Fatalf("Fetch = value %q, handle %v; want the token in both", s.Value, s.Handle)
			}
			scope, ok := as.check(t, s.Value)
			if !ok {
				t.Fatal("the server does not accept the fetched token")
			}
			if scope != "payments.read payments.write" {
				t.Errorf("granted scope = %q, want both requested scopes", scope)
			}
			if s.IssuedAt.Before(before) || s.IssuedAt.After(after) {
				t.Errorf("IssuedAt %v not within the call [%v, %v]", s.IssuedAt, before, after)
			}
			if got := s.ExpiresAt.Sub(s.IssuedAt); got != 2*time.Second {
				t.Errorf("ExpiresAt - IssuedAt = %v, want 2s", got)
			}
		})
	}
}

func TestOAuth2FetchSendsParams(t *testing.T) {
	got := make(chan url.Values, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		got <- r.PostForm
		io.WriteString(w, `{"access_token":"tok","token_type":"Bearer"}`)
	}))
	defer ts.Close()
	src := &OAuth2Source{
		TokenURL: ts.URL, ClientID: "id", Audience: "https://api.example",
		Params: map[string]string{"resource": "r1", "grant_type": "password"},
	}
	s, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !s.ExpiresAt.IsZero() {
		t.Errorf("ExpiresAt = %v without expires_in, want zero (never)", s.ExpiresAt)
	}
	form := <-got
	want := url.Values{"grant_type": {"client_credentials"}, "audience": {"https://api.example"}, "resource": {"r1"}}
	for k, v := range want {
		if form.Get(k) != v[0] {
			t.Errorf("parameter %s = %q, want %q", k, form.Get(k), v[0])
		}
	}
	if form.Has("scope") {
		t.Errorf("scope sent without scopes: %q", form.Get("scope"))
	}
}

func TestOAuth2WrongSecret(t *testing.T) {
	for _, style := range []string{AuthStyleBasic, AuthStylePost} {
		t.Run(style, func(t *testing.T) {
			info := server.ClientBasicHandler
			if style == AuthStylePost {
				info = server.ClientFormHandler
			}
			as := newOAuth2Server(t, info, randomSecret(t), 2*time.Second)
			wrong := randomSecret(t)
			_, err := as.source(style, wrong).Fetch(context.Background())
			if err == nil {
				t.Fatal("Fetch with a wrong client secret succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, wrong) {
				t.Errorf("error shows the client secret: %s", msg)
			}
			for _, want := range []string{"401", "invalid_client", "Client authentication failed"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestOAuth2ErrorsHideResponse(t *testing.T) {
	const secret = "client-secret-value"
	tests := []struct {
		name    string
		status  int
		ctype   string
		body    string
		want    string
		notWant []string
	}{
		{"oauth2 error", 400, "application/json",
			`{"error":"invalid_scope","error_description":"no scope for client-secret-value","debug":"private-detail"}`,
			`400 Bad Request: "invalid_scope" ("no scope for [redacted]")`, []string{"private-detail"}},
		{"html page", 502, "text/html", "<html>private-detail</html>", "502 Bad Gateway", []string{"private-detail", "html"}},
		{"long description", 400, "application/json",
			`{"error":"invalid_request","error_description":"` + strings.Repeat("x", 1000) + `"}`,
			`...")`, []string{strings.Repeat("x", 201)}},
		{"no access_token", 200, "application/json", `{"token_type":"Bearer","secret":"private-detail"}`,
			"no access_token", []string{"private-detail"}},
		{"error with 200", 200, "application/json", `{"error":"bad_verification_code","error_description":"private-detail"}`,
			`no access_token but error "bad_verification_code"`, []string{"private-detail"}},
		{"not json", 200, "application/json", `{private-detail`, "not a JSON object", []string{"private-detail"}},
		{"bad expires_in", 200, "application/json", `{"access_token":"private-detail","expires_in":"soon"}`,
			"expires_in", []string{"private-detail", "soon"}},
		{"negative expires_in", 200, "application/json", `{"access_token":"private-detail","expires_in":-5}`,
			"expires_in", []string{"private-detail"}},
		{"token not a string", 200, "application/json", `{"access_token":12345678}`,
			`"access_token" has the wrong type`, []string{"12345678"}},
		{"too large", 200, "application/json", `{"access_token":"` + strings.Repeat("p", maxOAuth2Response) + `"}`,
			"larger than", []string{"ppp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer ts.Close()
			src := &OAuth2Source{TokenURL: ts.URL, ClientID: "id",
				ClientSecret: EnvSource{Name: "S", Lookup: func(string) (string, bool) { return secret, true }}}
			_, err := src.Fetch(context.Background())
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			for _, s := range append(tt.notWant, secret) {
				if strings.Contains(msg, s) {
					t.Errorf("error %q shows %q", msg, s)
				}
			}
		})
	}
}

func TestOAuth2FormEncodedAndStringExpiry(t *testing.T) {
	tests := []struct{ name, ctype, body string }{
		{"form", "application/x-www-form-urlencoded", "access_token=tok&token_type=bearer&expires_in=60"},
		{"string expires_in", "application/json", `{"access_token":"tok","expires_in":"60"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				io.WriteString(w, tt.body)
			}))
			defer ts.Close()
			now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
			src := &OAuth2Source{TokenURL: ts.URL, ClientID: "id", Now: func() time.Time { return now }}
			s, err := src.Fetch(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if s.Value != "tok" || !s.IssuedAt.Equal(now) || !s.ExpiresAt.Equal(now.Add(time.Minute)) {
				t.Errorf("Fetch = %q issued %v expires %v", s.Value, s.IssuedAt, s.ExpiresAt)
			}
		})
	}
}

// The default client follows no redirect: a 307 would resend the client
// secret in the body to wherever it points.
func TestOAuth2NoRedirect(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer other.Close()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL, http.StatusTemporaryRedirect)
	}))
	defer ts.Close()
	src := &OAuth2Source{TokenURL: ts.URL, ClientID: "id", AuthStyle: AuthStylePost,
		ClientSecret: EnvSource{Name: "S", Lookup: func(string) (string, bool) { return "secret", true }}}
	_, err := src.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "307") {
		t.Errorf("Fetch error = %v, want the 307 status", err)
	}
	if elsewhere.Load() != 0 {
		t.Error("the redirect was followed")
	}
}

func TestOAuth2ClientSecretFileRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client-secret")
	first, second := randomSecret(t), randomSecret(t)
	if err := os.WriteFile(path, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	as := newOAuth2Server(t, server.ClientBasicHandler, first, time.Minute)
	src, err := NewSource(config.Credential{
		Name: "partner", Source: config.SourceOAuth2, TokenURL: as.URL + "/token", ClientID: testClientID,
		ClientSecret: &config.Ref{Kind: config.RefFile, Name: path}, AuthStyle: AuthStyleBasic,
	})
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	fetch := func() error {
		s, err := src.Fetch(context.Background())
		if err == nil {
			if _, ok := as.check(t, s.Value); !ok {
				t.Fatal("the server does not accept the fetched token")
			}
		}
		return err
	}
	if err := fetch(); err != nil {
		t.Fatalf("Fetch with the first secret: %v", err)
	}
	as.setSecret(second) // rotated at the issuer, not yet in the file
	err = fetch()
	if err == nil {
		t.Fatal("Fetch with a stale client secret succeeded")
	}
	if strings.Contains(err.Error(), first) {
		t.Errorf("error shows the client secret: %v", err)
	}
	if err := os.WriteFile(path, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fetch(); err != nil {
		t.Fatalf("Fetch after the file was rotated: %v", err)
	}
}

func TestOAuth2Revoke(t *testing.T) {
	for _, style := range []string{AuthStyleBasic, AuthStylePost} {
		t.Run(style, func(t *testing.T) {
			info := server.ClientBasicHandler
			if style == AuthStylePost {
				info = server.ClientFormHandler
			}
			secret := randomSecret(t)
			as := newOAuth2Server(t, info, secret, time.Minute)
			src := as.source(style, secret)
			s, err := src.Fetch(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := as.check(t, s.Value); !ok {
				t.Fatal("the fresh token does not validate")
			}
			if err := src.Revoke(context.Background(), s); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			if n := as.revokes.Load(); n != 1 {
				t.Errorf("revocation endpoint called %d times, want 1", n)
			}
			if _, ok := as.check(t, s.Value); ok {
				t.Error("the revoked token still validates")
			}
		})
	}
}

func TestOAuth2RevokeErrors(t *testing.T) {
	secret := randomSecret(t)
	as := newOAuth2Server(t, server.ClientBasicHandler, secret, time.Minute)
	s, err := as.source(AuthStyleBasic, secret).Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	noURL := as.source(AuthStyleBasic, secret)
	noURL.RevocationURL = ""
	if err := noURL.Revoke(context.Background(), s); err != nil {
		t.Errorf("Revoke without a revocation URL = %v, want nil", err)
	}

	wrong := randomSecret(t)
	err = as.source(AuthStyleBasic, wrong).Revoke(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("Revoke with a wrong client secret = %v, want 401 invalid_client", err)
	}
	if err != nil && (strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), s.Value)) {
		t.Errorf("error shows a secret: %v", err)
	}
	if as.revokes.Load() != 0 {
		t.Error("revocation endpoint accepted a call without valid client credentials")
	}
	if _, ok := as.check(t, s.Value); !ok {
		t.Error("a refused revocation removed the token")
	}
}

func TestNewSourceOAuth2(t *testing.T) {
	ref := &config.Ref{Kind: config.RefEnv, Name: "CLIENT_SECRET"}
	good := config.Credential{Name: "partner", Source: config.SourceOAuth2, TokenURL: "https://auth.example/token",
		ClientID: "me", ClientSecret: ref, Scopes: []string{"a"}, Audience: "aud", AuthStyle: "post",
		RevocationURL: "https://auth.example/revoke", Params: map[string]string{"resource": "r"}}
	src, err := NewSource(good)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	o, ok := src.(*OAuth2Source)
	if !ok {
		t.Fatalf("NewSource = %T, want *OAuth2Source", src)
	}
	if o.TokenURL != good.TokenURL || o.ClientID != "me" || o.Audience != "aud" || o.AuthStyle != "post" ||
		o.RevocationURL != good.RevocationURL || o.Params["resource"] != "r" || len(o.Scopes) != 1 {
		t.Errorf("NewSource = %+v, does not match the credential", o)
	}
	if _, ok := o.ClientSecret.(*EnvSource); !ok {
		t.Errorf("ClientSecret = %T, want the env reference's source", o.ClientSecret)
	}
	if _, ok := src.(Revoker); !ok {
		t.Error("the oauth2 source is not a Revoker")
	}

	tests := []struct {
		name        string
		edit        func(*config.Credential)
		want        string
		unsupported bool
	}{
		{"no token_url", func(c *config.Credential) { c.TokenURL = "" }, "token_url", false},
		{"no client_id", func(c *config.Credential) { c.ClientID = "" }, "client_id", false},
		{"no client_secret", func(c *config.Credential) { c.ClientSecret = nil }, "client_secret", false},
		{"bad auth_style", func(c *config.Credential) { c.AuthStyle = "jwt" }, "auth_style", false},
		{"vault client_secret", func(c *config.Credential) {
			c.ClientSecret = &config.Ref{Kind: config.RefVault, Name: "secret/data/partner", Field: "client_secret"}
		}, "client_secret", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			_, err := NewSource(c)
			if err == nil {
				t.Fatal("NewSource succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"partner"`) {
				t.Errorf("error %q does not name %q and the credential", err, tt.want)
			}
			if got := errors.Is(err, ErrUnsupportedSource); got != tt.unsupported {
				t.Errorf("errors.Is(%v, ErrUnsupportedSource) = %v, want %v", err, got, tt.unsupported)
			}
		})
	}
}

// TestOAuth2Holder runs a Holder on the real clock against tokens that
// live 2s: every token a request acquires validates at the server, and
// every superseded token is revoked while still valid, after which the
// server refuses it.
func TestOAuth2Holder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several seconds on the real clock")
	}
	secret := randomSecret(t)
	as := newOAuth2Server(t, server.ClientBasicHandler, secret, 2*time.Second)
	h := &Holder{
		Name:      "partner",
		Source:    as.source(AuthStyleBasic, secret),
		RevokeOld: true,
		RetryMin:  50 * time.Millisecond,
		RetryMax:  200 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	const wantRevocations = 3 // four tokens: about 4s of 2s tokens refreshed at two thirds
	deadline := time.Now().Add(9 * time.Second)
	seen := map[string]bool{}
	var (
		acquired, failures int
		revoked            []revocation
		mu                 sync.Mutex
		wg                 sync.WaitGroup
	)
	checkRevoked := func(r revocation) {
		defer wg.Done()
		if _, ok := as.check(t, r.token); ok {
			mu.Lock()
			failures++
			mu.Unlock()
			t.Error("a revoked token still validates")
		}
	}
	for len(revoked) < wantRevocations && time.Now().Before(deadline) {
		select {
		case r := <-as.revoked:
			revoked = append(revoked, r)
			wg.Add(1)
			go checkRevoked(r)
		default:
		}
		v, err := h.Acquire()
		if errors.Is(err, ErrUnavailable) && len(seen) == 0 {
			time.Sleep(5 * time.Millisecond) // the first fetch is under way
			continue
		}
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		token := v.Secret().Value
		seen[token] = true
		acquired++
		if _, ok := as.check(t, token); !ok {
			mu.Lock()
			failures++
			mu.Unlock()
			t.Errorf("acquired token (version %d) does not validate", v.Number())
		}
		v.Release()
	}
	wg.Wait()
	if len(revoked) < wantRevocations {
		t.Fatalf("%d revocations within the deadline (%d tokens seen), want %d", len(revoked), len(seen), wantRevocations)
	}
	if failures != 0 {
		t.Fatalf("%d failures among %d acquisitions", failures, acquired)
	}
	for _, r := range revoked {
		if !seen[r.token] {
			t.Error("a token that no request ever acquired was revoked")
		}
		if !r.live {
			t.Error("a token was revoked only after it expired")
		}
	}
	t.Logf("%d acquisitions of %d tokens, %d revocations", acquired, len(seen), len(revoked))
}
