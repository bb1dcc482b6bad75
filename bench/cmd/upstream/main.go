// Command upstream is the token-checking origin behind every proxy in the
// peer benchmark. It answers a 64-byte body to requests whose
// Authorization header is "Bearer T" for a token T in its valid set, and
// 401 to all others, counting both. GET /_stats (no token needed) reports
// the counters as JSON, for the harness to read before and after a run.
//
// The valid set holds the static token given with -token, which never
// expires, and, with -rotate-file, the tokens upstream issues itself: every
// -rotate-every it mints a token, adds it to the set, and only then writes
// it to the file (a temporary file renamed over it), so a proxy that reads
// the file never holds a token the upstream does not know. Issued tokens
// stay valid for -valid-for.
//
// With -idle-file, POST /_issue-to?file=idle sends the issued tokens to
// that file instead, and POST /_issue-to?file=rotate back: the harness
// switches a proxy's rotation off and on without changing the upstream's
// own work.
//
//	upstream -listen 127.0.0.1:9000 -token T
//	upstream -listen 127.0.0.1:9000 -rotate-file /tmp/tok -rotate-every 10ms
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	listen      string
	token       string
	rotateFile  string
	idleFile    string
	rotateEvery time.Duration
	validFor    time.Duration
	bodyLen     int
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "address to listen on")
	fs.StringVar(&o.token, "token", "", "a static token that is always valid")
	fs.StringVar(&o.rotateFile, "rotate-file", "", "issue tokens and write each to this file")
	fs.StringVar(&o.idleFile, "idle-file", "", "where issued tokens go while switched to idle (POST /_issue-to?file=idle)")
	fs.DurationVar(&o.rotateEvery, "rotate-every", 10*time.Millisecond, "how often to issue a token")
	fs.DurationVar(&o.validFor, "valid-for", 5*time.Second, "how long an issued token stays valid")
	fs.IntVar(&o.bodyLen, "request-body", -1, "expected request body length for POST; -1 = any")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.token == "" && o.rotateFile == "" {
		return o, errors.New("upstream: -token or -rotate-file is required")
	}
	if o.idleFile != "" && o.rotateFile == "" {
		return o, errors.New("upstream: -idle-file needs -rotate-file")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	set := newTokenSet(o.validFor)
	if o.token != "" {
		set.add(o.token, 0)
	}
	is := &issuer{set: set, path: o.rotateFile, idlePath: o.idleFile}
	if o.rotateFile != "" {
		if err := is.issue(time.Now()); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	ln, err := net.Listen("tcp4", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "upstream: %v\n", err)
		return 1
	}
	o.listen = ln.Addr().String()
	u := &upstream{set: set, issuer: is, bodyLen: o.bodyLen}
	srv := &fasthttp.Server{Handler: u.handle, NoDefaultServerHeader: true, ReadBufferSize: 16 << 10}
	fmt.Fprintf(stdout, "listening %s\n", o.listen)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	if o.rotateFile != "" {
		go is.run(ctx, o.rotateEvery, stderr)
	}
	select {
	case <-ctx.Done():
		_ = srv.Shutdown()
	case err := <-done:
		fmt.Fprintf(stderr, "upstream: %v\n", err)
		return 1
	}
	b, _ := json.Marshal(u.stats())
	fmt.Fprintf(stderr, "upstream: %s\n", b)
	return 0
}

// tokenSet is the set of valid tokens with the time each was issued; a
// token issued at 0 never expires. Safe for concurrent use.
type tokenSet struct {
	mu     sync.RWMutex
	issued map[string]int64
	window int64
}

func newTokenSet(validFor time.Duration) *tokenSet {
	return &tokenSet{issued: map[string]int64{}, window: int64(validFor)}
}

// valid reports whether tok is in the set and has not expired at now.
func (s *tokenSet) valid(tok []byte, now int64) bool {
	s.mu.RLock()
	at, ok := s.issued[string(tok)]
	s.mu.RUnlock()
	return ok && (at == 0 || now-at <= s.window)
}

// add puts tok in the set and drops expired tokens.
func (s *tokenSet) add(tok string, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issued[tok] = at
	for t, when := range s.issued {
		if when != 0 && at-when > s.window {
			delete(s.issued, t)
		}
	}
}

// issuer mints tokens into a tokenSet and publishes each to a file: path,
// or idlePath while idle is set.
type issuer struct {
	set      *tokenSet
	path     string
	idlePath string
	idle     atomic.Bool
	count    atomic.Uint64
	errors   atomic.Uint64
}

// issue mints a token, makes it valid, then writes it to the file by
// rename, so the file never holds a token the set does not.
func (is *issuer) issue(now time.Time) error {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok := "bench-" + hex.EncodeToString(raw[:])
	is.set.add(tok, now.UnixNano())
	path := is.path
	if is.idle.Load() {
		path = is.idlePath
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("upstream: writing token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("upstream: writing token: %w", err)
	}
	is.count.Add(1)
	return nil
}

func (is *issuer) run(ctx context.Context, every time.Duration, stderr io.Writer) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := is.issue(now); err != nil && is.errors.Add(1) == 1 {
				fmt.Fprintln(stderr, err)
			}
		}
	}
}

// upstream is the request handler and its counters.
type upstream struct {
	set     *tokenSet
	issuer  *issuer
	bodyLen int

	ok, unauthorized, badBody atomic.Uint64
}

// Stats is what GET /_stats answers.
type Stats struct {
	OK           uint64 `json:"ok"`
	Unauthorized uint64 `json:"unauthorized"`
	BadBody      uint64 `json:"bad_body"`
	Issued       uint64 `json:"issued"`
	IssueErrors  uint64 `json:"issue_errors"`
}

func (u *upstream) stats() Stats {
	return Stats{OK: u.ok.Load(), Unauthorized: u.unauthorized.Load(), BadBody: u.badBody.Load(),
		Issued: u.issuer.count.Load(), IssueErrors: u.issuer.errors.Load()}
}

var (
	bearer     = []byte("Bearer ")
	statsURI   = []byte("/_stats")
	issueToURI = []byte("/_issue-to")
	// payload is the 64-byte answer.
	payload = []byte(`{"ok":true,"note":"sixty-four bytes of upstream response body."}`)
)

func (u *upstream) handle(ctx *fasthttp.RequestCtx) {
	if ctx.IsGet() && bytes.Equal(ctx.Path(), statsURI) {
		b, _ := json.Marshal(u.stats())
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
		return
	}
	if ctx.IsPost() && bytes.Equal(ctx.Path(), issueToURI) {
		u.issueTo(ctx)
		return
	}
	auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	if !bytes.HasPrefix(auth, bearer) || !u.set.valid(auth[len(bearer):], ctx.Time().UnixNano()) {
		u.unauthorized.Add(1)
		ctx.SetStatusCode(fasthttp.StatusUnauthorized)
		ctx.SetBodyString(`{"error":"unauthorized"}`)
		return
	}
	if u.bodyLen >= 0 && ctx.IsPost() && len(ctx.PostBody()) != u.bodyLen {
		u.badBody.Add(1)
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetBodyString(`{"error":"body"}`)
		return
	}
	u.ok.Add(1)
	ctx.SetContentType("application/json")
	ctx.SetBody(payload)
}

// issueTo switches where issued tokens go: ?file=rotate or ?file=idle.
func (u *upstream) issueTo(ctx *fasthttp.RequestCtx) {
	switch file := string(ctx.QueryArgs().Peek("file")); {
	case u.issuer.idlePath == "":
		ctx.SetStatusCode(fasthttp.StatusConflict)
		ctx.SetBodyString(`{"error":"no -idle-file"}`)
	case file == "rotate" || file == "idle":
		u.issuer.idle.Store(file == "idle")
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	default:
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetBodyString(`{"error":"file is rotate or idle"}`)
	}
}
