package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sidekey/sidekey/config"
)

// cmdDemo runs a token issuer minting short-lived tokens, an upstream that
// accepts only live ones, and the proxy between them, all on loopback.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sidekey demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listenAddr := fs.String("listen", "127.0.0.1:8080", "app-facing listener")
	adminAddr := fs.String("admin", "127.0.0.1:9901", "admin listener")
	ttl := fs.Duration("ttl", 30*time.Second, "lifetime of each minted token")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	if err := harden(false); err != nil {
		fmt.Fprintf(stderr, "sidekey demo: %v\n", err)
		return exitFailed
	}
	iss := &issuer{ttl: *ttl, live: map[string]time.Time{}}
	issURL, upURL, err := iss.start(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "sidekey demo: %v\n", err)
		return exitFailed
	}
	cfg, err := demoConfig(*listenAddr, *adminAddr, issURL, upURL)
	if err != nil {
		fmt.Fprintf(stderr, "sidekey demo: %v\n", err)
		return exitFailed
	}
	addrs := map[string]string{}
	onListen := func(name, addr string) {
		addrs[name] = addr
		if len(addrs) == 2 {
			printDemoHelp(stdout, addrs["proxy"], addrs["admin"], *ttl)
		}
	}
	if err := serve(ctx, cfg, stderr, onListen, nil); err != nil {
		fmt.Fprintf(stderr, "sidekey demo: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// demoConfig is an ordinary config file, parsed and validated like any
// other: an exec credential that asks the issuer, one route to the upstream.
func demoConfig(listen, admin, issuerURL, upstreamURL string) (*config.Config, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	yaml := fmt.Sprintf(`listen: %q
admin: {listen: %q}
log: {level: info, format: text}
credentials:
  demo:
    source: exec
    command: [%q, demo-token, %q]
    refresh_before: 33%%
routes:
  - name: demo
    match: {path_prefix: /api/}
    upstream: %q
    strip_prefix: true
    inject: {credential: demo, as: bearer}
`, listen, admin, self, issuerURL, upstreamURL)
	return config.Parse("demo.yaml", []byte(yaml))
}

func printDemoHelp(w io.Writer, proxyAddr, adminAddr string, ttl time.Duration) {
	fmt.Fprintf(w, `sidekey demo: a token issuer minting %s tokens, an upstream that accepts only live
ones, and sidekey between them. The app (you, with curl) never sees a token.

  curl -s http://%[2]s/api/hello
      sidekey injects the current token; the upstream answers 200
  curl -s -H 'Authorization: Bearer forged' http://%[2]s/api/hello
      the app's own Authorization never reaches the upstream
  curl -s http://%[3]s/v1/credentials
      version, fingerprint and expiry; a new version every ~%[4]s
  curl -s -X POST http://%[3]s/v1/credentials/demo/rotate
      rotate now; the next request carries the new token

Rotation lines appear below as they happen. Ctrl-C stops the demo.

`, ttl, proxyAddr, adminAddr, (ttl * 2 / 3).Round(time.Second))
}

// issuer mints random bearer tokens that live ttl, and knows which are live.
type issuer struct {
	ttl  time.Duration
	mu   sync.Mutex
	live map[string]time.Time
}

// start serves the issuer (POST /token) and the upstream on loopback until
// ctx ends, returning their URLs.
func (iss *issuer) start(ctx context.Context) (string, string, error) {
	issURL, err := serveHTTP(ctx, http.HandlerFunc(iss.mint))
	if err != nil {
		return "", "", err
	}
	upURL, err := serveHTTP(ctx, http.HandlerFunc(iss.upstream))
	return issURL + "/token", upURL, err
}

func (iss *issuer) mint(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var b [18]byte
	_, _ = rand.Read(b[:])
	tok := "demo_" + hex.EncodeToString(b[:])
	exp := time.Now().Add(iss.ttl)
	iss.mu.Lock()
	for t, e := range iss.live {
		if time.Now().After(e) {
			delete(iss.live, t)
		}
	}
	iss.live[tok] = exp
	iss.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_at": exp.UTC().Format(time.RFC3339Nano)})
}

// upstream accepts a request only with a live bearer token.
func (iss *issuer) upstream(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	iss.mu.Lock()
	exp, ok := iss.live[tok]
	iss.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok || time.Now().After(exp) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"invalid or expired token"}`+"\n")
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"ok": true, "path": r.URL.Path,
		"token_expires_in": time.Until(exp).Round(time.Second).String(),
	})
}

// serveHTTP serves h on a loopback port until ctx ends.
func serveHTTP(ctx context.Context, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), nil
}

// cmdDemoToken asks the demo issuer for a token and prints its JSON answer,
// the shape the exec source accepts. The demo's credential runs it.
func cmdDemoToken(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: sidekey demo-token ISSUER_URL")
		return exitUsage
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodPost, args[0], nil)
	resp, err := http.DefaultClient.Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo-token: %v\n", err)
		return exitFailed
	}
	defer resp.Body.Close()
	_, _ = io.Copy(stdout, io.LimitReader(resp.Body, 64<<10))
	return exitOK
}
