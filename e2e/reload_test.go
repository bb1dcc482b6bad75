package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadClients sends requests continuously over a fixed set of keep-alive
// connections until stopped, and counts what failed.
type loadClients struct {
	dials    atomic.Int64
	ok, fail atomic.Int64

	mu       sync.Mutex
	failures []string

	stop chan struct{}
	wg   sync.WaitGroup
}

// startLoad starts n clients, each on its own connection, cycling through
// paths on base; a request fails unless it answers 200.
func startLoad(t testing.TB, base string, n int, paths []string) *loadClients {
	t.Helper()
	l := &loadClients{stop: make(chan struct{})}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxConnsPerHost:     n,
		MaxIdleConnsPerHost: n,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			l.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	for i := range n {
		l.wg.Go(func() {
			for k := i; ; k++ {
				select {
				case <-l.stop:
					return
				default:
				}
				path := paths[k%len(paths)]
				if err := l.one(t, client, base+path); err != nil {
					l.fail.Add(1)
					l.mu.Lock()
					if len(l.failures) < 5 {
						l.failures = append(l.failures, fmt.Sprintf("%s at %s: %v", path, time.Now().Format("15:04:05.000"), err))
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *loadClients) one(t testing.TB, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	captureResponse(t, "GET "+url, resp, body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, maskSecrets(string(body)))
	}
	return nil
}

// halt stops the clients and waits for their last requests.
func (l *loadClients) halt() {
	close(l.stop)
	l.wg.Wait()
}

// wantNoRoute asserts a 404 {"error":"no_route"}.
func wantNoRoute(t testing.TB, p *proc, path string) {
	t.Helper()
	resp, body := p.get(t, path)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s = %d, want 404 no_route: %s", path, resp.StatusCode, maskSecrets(string(body)))
		return
	}
	if m, err := jsonError(body); err != nil || m["error"] != "no_route" {
		t.Errorf("GET %s body %q, want {\"error\":\"no_route\"}", path, maskSecrets(string(body)))
	}
}

// probe sends GET path with a fresh X-Test-Id, wants 200, and returns the
// body and what up received.
func probe(t testing.TB, p *proc, up *upstream, path string) (string, seenRequest) {
	t.Helper()
	id := nextID()
	resp, body := p.get(t, path, "X-Test-Id", id)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d, want 200: %s", path, resp.StatusCode, maskSecrets(string(body)))
	}
	seen, ok := up.byID(id)
	if !ok {
		t.Fatalf("GET %s did not reach the expected upstream", path)
	}
	return string(body), seen
}

// TestReloadUnderLoad keeps 16 keep-alive connections busy for 10 s on
// two routes that exist throughout, while the config file is rewritten and
// SIGHUP sent five times: a route and a credential added, a route's
// upstream and header format changed, an invalid file, routes and a
// credential removed, a route added. No request on the lasting routes may
// fail; each change shows on the next request; the refused file leaves the
// running configuration serving; the credential the reloads never touch
// keeps its value without a refetch.
func TestReloadUnderLoad(t *testing.T) {
	const (
		clients  = 16
		duration = 10 * time.Second
	)
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	keepTok, extraTok := secretValue(t), secretValue(t)
	keepPath, runsPath, extraPath := filepath.Join(dir, "keep"), filepath.Join(dir, "runs"), filepath.Join(dir, "extra")
	writeSecretFile(t, keepPath, keepTok)
	writeSecretFile(t, extraPath, extraTok)
	runs := func() int {
		b, _ := os.ReadFile(runsPath)
		return strings.Count(string(b), "\n")
	}

	// Both upstreams accept only what the routes inject, and say who they are.
	valid := func(r *http.Request) bool {
		switch r.Header.Get("Authorization") {
		case "Bearer " + keepTok, "Bearer " + extraTok:
			return true
		}
		k := r.Header.Get("X-Key")
		return k == keepTok || k == "token "+keepTok
	}
	named := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !valid(r) {
				http.Error(w, "bad credential", http.StatusForbidden)
				return
			}
			io.WriteString(w, name)
		}
	}
	upA, upB := newUpstream(t, named("A")), newUpstream(t, named("B"))

	keep := execCred("keep", []string{sh, "-c", `echo run >> "$0"; cat "$1"`, runsPath, keepPath}, "refresh: 1h")
	extra := fileCred("extra", extraPath)
	stableA := route{name: "stable", prefix: "/stable/", upstream: upA.URL, strip: true, inject: "{credential: keep, as: bearer}"}
	stableB := stableA
	stableB.upstream = upB.URL
	fixedRaw := route{name: "fixed", prefix: "/fixed/", upstream: upA.URL, strip: true, inject: "{credential: keep, as: header, header: X-Key}"}
	fixedFmt := fixedRaw
	fixedFmt.inject = `{credential: keep, as: header, header: X-Key, format: "token %s"}`
	gone := route{name: "gone", prefix: "/gone/", upstream: upA.URL, strip: true, inject: "{credential: keep, as: bearer}"}
	added := route{name: "added", prefix: "/added/", upstream: upA.URL, strip: true, inject: "{credential: extra, as: bearer}"}
	late := route{name: "late", prefix: "/late/", upstream: upB.URL, strip: true, inject: "{credential: keep, as: bearer}"}
	broken := added
	broken.extra = []string{"retries_typo: 3"}

	p := startSidekey(t, configYAML(nil, []string{keep}, []route{stableA, fixedRaw, gone}))
	waitOK(t, p, "/stable/ready")
	waitOK(t, p, "/fixed/ready")
	keepBefore, runsBefore := credentialOf(t, p, "keep"), runs()

	started := time.Now()
	load := startLoad(t, p.ProxyURL, clients, []string{"/stable/x", "/fixed/x"})
	defer func() {
		select {
		case <-load.stop:
		default:
			load.halt()
		}
	}()
	step := duration / 6
	pause := func(i int) { <-time.After(time.Until(started.Add(time.Duration(i) * step))) }
	reload := func(t *testing.T, creds []string, routes []route) []map[string]any {
		t.Helper()
		applied, lines := reloadWith(t, p, configYAML(nil, creds, routes))
		if !applied {
			t.Fatalf("reload refused:\n%s", p.tail(20))
		}
		return lines
	}
	reloaded := func(lines []map[string]any) map[string]any { return lines[len(lines)-1] }

	t.Run("route and credential added", func(t *testing.T) {
		wantNoRoute(t, p, "/added/x")
		pause(1)
		e := reloaded(reload(t, []string{keep, extra}, []route{stableA, fixedRaw, gone, added}))
		if e["credentials_added"] != 1.0 || e["credentials_removed"] != 0.0 {
			t.Errorf("reload logged %v added and %v removed credentials, want 1 and 0", e["credentials_added"], e["credentials_removed"])
		}
		waitOK(t, p, "/added/x")
		if _, seen := probe(t, p, upA, "/added/x"); seen.Header.Get("Authorization") != "Bearer "+extraTok {
			t.Error("the added route did not inject the added credential")
		}
	})

	t.Run("upstream and header format changed", func(t *testing.T) {
		pause(2)
		e := reloaded(reload(t, []string{keep, extra}, []route{stableB, fixedFmt, gone, added}))
		if e["credentials_added"] != 0.0 || e["credentials_removed"] != 0.0 {
			t.Errorf("reload logged %v added and %v removed credentials, want none", e["credentials_added"], e["credentials_removed"])
		}
		if body, _ := probe(t, p, upB, "/stable/x"); body != "B" {
			t.Errorf("/stable/ answered from upstream %q after the reload, want B", body)
		}
		if _, seen := probe(t, p, upA, "/fixed/x"); seen.Header.Get("X-Key") != "token "+keepTok {
			t.Errorf("/fixed/ X-Key %q after the reload, want the new format", maskSecrets(seen.Header.Get("X-Key")))
		}
	})

	t.Run("invalid file refused", func(t *testing.T) {
		pause(3)
		text := configYAML(nil, []string{keep, extra}, []route{stableB, fixedFmt, gone, broken})
		applied, lines := reloadWith(t, p, text)
		if applied {
			t.Fatal("a file with an unknown key was applied")
		}
		want := fmt.Sprintf("%s:%d: ", p.ConfigPath, lineOf(t, text, "retries_typo"))
		var problems []string
		for _, e := range lines {
			if e["msg"] == "reload refused" {
				s, _ := e["problem"].(string)
				problems = append(problems, s)
			}
		}
		found := false
		for _, s := range problems {
			found = found || strings.HasPrefix(s, want)
		}
		t.Logf("refused: %q", problems)
		if !found {
			t.Errorf("reload refused problems %q, want one starting %q", problems, want)
		}
		// The running configuration keeps serving.
		if body, _ := probe(t, p, upB, "/stable/x"); body != "B" {
			t.Errorf("/stable/ answered from %q after a refused reload, want B", body)
		}
		probe(t, p, upA, "/added/x")
		probe(t, p, upA, "/gone/x")
	})

	t.Run("routes and credential removed", func(t *testing.T) {
		pause(4)
		e := reloaded(reload(t, []string{keep}, []route{stableB, fixedFmt}))
		if e["credentials_removed"] != 1.0 {
			t.Errorf("reload logged %v removed credentials, want 1", e["credentials_removed"])
		}
		wantNoRoute(t, p, "/gone/x")
		wantNoRoute(t, p, "/added/x")
	})

	t.Run("route added again", func(t *testing.T) {
		pause(5)
		e := reloaded(reload(t, []string{keep}, []route{stableB, fixedFmt, late}))
		if e["credentials_added"] != 0.0 {
			t.Errorf("reload logged %v added credentials, want 0", e["credentials_added"])
		}
		if body, _ := probe(t, p, upB, "/late/x"); body != "B" {
			t.Errorf("/late/ answered from %q, want B", body)
		}
		wantNoRoute(t, p, "/gone/x")
	})

	pause(6)
	load.halt()
	t.Logf("%d requests succeeded, %d failed, over %d connection(s) by %d clients, in %v",
		load.ok.Load(), load.fail.Load(), load.dials.Load(), clients, time.Since(started).Round(time.Millisecond))
	if n := load.fail.Load(); n > 0 {
		t.Errorf("%d requests on the lasting routes failed across the reloads; first: %q", n, load.failures)
	}
	if load.ok.Load() == 0 {
		t.Error("no request succeeded")
	}
	if n := load.dials.Load(); n > clients {
		t.Errorf("the clients opened %d connections for %d keep-alive clients: reloads closed connections", n, clients)
	}

	keepAfter := credentialOf(t, p, "keep")
	if keepAfter.Version != keepBefore.Version || keepAfter.Fingerprint != keepBefore.Fingerprint || keepAfter.Rotations != keepBefore.Rotations {
		t.Errorf("the unchanged credential went from version %d (%s, %d rotations) to %d (%s, %d rotations) across reloads",
			keepBefore.Version, keepBefore.Fingerprint, keepBefore.Rotations, keepAfter.Version, keepAfter.Fingerprint, keepAfter.Rotations)
	}
	if n := runs() - runsBefore; n != 0 {
		t.Errorf("the unchanged credential's command ran %d more times across reloads, want 0 (no refetch)", n)
	}
}

// TestReloadListen reloads a config whose listen address changed while a
// request is in flight: the new address serves, the old one refuses new
// connections, and the request in flight on it completes.
func TestReloadListen(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
			io.WriteString(w, "done")
			return
		}
		io.WriteString(w, "ok")
	})
	text := configYAML(nil,
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "l", prefix: "/l/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}", timeout: "60s"}})
	p := startSidekey(t, text)
	waitOK(t, p, "/l/ready")
	oldAddr := p.ProxyAddr

	type outcome struct {
		status int
		body   string
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{Proxy: nil}}
		defer client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+oldAddr+"/l/slow", nil)
		resp, err := client.Do(req)
		if err != nil {
			done <- outcome{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- outcome{status: resp.StatusCode, body: string(b), err: err}
	}()
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("the slow request never reached the upstream")
	}

	newAddr := freePort(t)
	const first = "listen: 127.0.0.1:0\n"
	if !strings.HasPrefix(text, first) {
		t.Fatalf("config does not start with %q", first)
	}
	from := len(p.Logs())
	if applied, _ := reloadWith(t, p, "listen: "+newAddr+"\n"+strings.TrimPrefix(text, first)); !applied {
		t.Fatalf("reload with a new listen address refused:\n%s", p.tail(20))
	}
	if _, err := p.waitLogFrom(from, 5*time.Second, func(e map[string]any) bool {
		return e["msg"] == "listening" && e["listener"] == "proxy" && e["addr"] == newAddr
	}); err != nil {
		t.Errorf("no listening line for the new address %s: %v", newAddr, err)
	}

	resp, body, err := p.send(t, http.MethodGet, "http://"+newAddr+"/l/x", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET on the new address %s: %v %v", newAddr, err, statusOf(resp, body))
	}
	eventually(t, 5*time.Second, "the old address refuses new connections", func() error {
		return refusesConnections(oldAddr)
	})

	select {
	case o := <-done:
		t.Fatalf("the request in flight on the old address ended before its upstream answered: %d %v", o.status, o.err)
	default:
	}
	close(release)
	select {
	case o := <-done:
		if o.err != nil || o.status != http.StatusOK || o.body != "done" {
			t.Errorf("the request in flight on the old address: status %d, body %q, err %v; want 200 done", o.status, o.body, o.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the request in flight on the old address did not complete")
	}
	if refusesConnections(newAddr) == nil {
		t.Errorf("the new address %s refuses connections", newAddr)
	}
}

func statusOf(resp *http.Response, body []byte) string {
	if resp == nil {
		return "no response"
	}
	return strconv.Itoa(resp.StatusCode) + " " + maskSecrets(string(body))
}

// TestReloadAuditLines turns the audit line off and on again by reloads:
// a request served while `log.requests` is false writes none. The line of
// a later request proves the earlier one would have been written by then,
// since the lines go out in order.
func TestReloadAuditLines(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))
	up := newUpstream(t, nil)
	creds := []string{fileCred("tok", filepath.Join(dir, "tok"))}
	routes := []route{{name: "a", prefix: "/a/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}
	logWith := func(requests bool) []string {
		return []string{"log:", "  level: debug", "  format: json", "  requests: " + strconv.FormatBool(requests)}
	}
	p := startSidekey(t, configYAML(logWith(true), creds, routes))
	waitOK(t, p, "/a/ready")
	audited := func(marker string) func(map[string]any) bool {
		return func(e map[string]any) bool {
			path, _ := e["path"].(string)
			return e["msg"] == "request" && strings.Contains(path, marker)
		}
	}
	get := func(path string, want int) {
		t.Helper()
		if resp, body := p.get(t, path); resp.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d: %s", path, resp.StatusCode, want, maskSecrets(string(body)))
		}
	}

	get("/a/before", http.StatusOK)
	if _, err := p.waitLog(10*time.Second, audited("/before")); err != nil {
		t.Fatalf("no audit line with log.requests true: %v", err)
	}
	if applied, _ := reloadWith(t, p, configYAML(logWith(false), creds, routes)); !applied {
		t.Fatalf("reload refused:\n%s", p.tail(20))
	}
	get("/a/quiet", http.StatusOK)
	get("/quiet-none", http.StatusNotFound)
	if applied, _ := reloadWith(t, p, configYAML(logWith(true), creds, routes)); !applied {
		t.Fatalf("reload refused:\n%s", p.tail(20))
	}
	get("/a/again", http.StatusOK)
	if _, err := p.waitLog(10*time.Second, audited("/again")); err != nil {
		t.Fatalf("no audit line once log.requests is true again: %v", err)
	}
	if e, err := p.waitLog(0, audited("quiet")); err == nil {
		t.Errorf("an audit line was written with log.requests false: %s", maskSecrets(fmt.Sprint(e)))
	}
}
