package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// eventLag is how soon after its cause an event must be on the stream.
const eventLag = time.Second

// TestEventsCredentials follows /v1/events while credentials change: a
// file credential rewritten, a forced rotation, an exec credential whose
// refreshes start failing, and one printing {"token","expires_at"} that
// expires while its refreshes fail. Each event arrives within a second of
// its cause, names versions and fingerprints, and never a value.
func TestEventsCredentials(t *testing.T) {
	t.Parallel()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	filePath, forcedPath := filepath.Join(dir, "file"), filepath.Join(dir, "forced")
	failingPath, expiringPath := filepath.Join(dir, "failing"), filepath.Join(dir, "expiring.json")
	values := []string{secretValue(t), secretValue(t), secretValue(t)}
	writeSecretFile(t, filePath, values[0])
	writeTestFile(t, forcedPath, values[1])
	writeTestFile(t, failingPath, values[2])
	expiringValue := secretValue(t)
	values = append(values, expiringValue)
	expiresAt := time.Now().Add(4 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	writeTestFile(t, expiringPath, fmt.Sprintf(`{"token": %q, "expires_at": %q}`, expiringValue, expiresAt.Format(time.RFC3339)))

	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(nil, []string{
		fileCred("file", filePath),
		execCred("forced", []string{cat, forcedPath}, "refresh: 1h"),
		execCred("failing", []string{cat, failingPath}, "refresh: 300ms"),
		execCred("expiring", []string{cat, expiringPath}),
	}, []route{{name: "f", prefix: "/f/", upstream: up.URL, strip: true, inject: "{credential: file, as: bearer}"}}))
	s := openEvents(t, p, "?since=0")

	first := map[string]seenEvent{}
	for _, name := range []string{"file", "forced", "failing", "expiring"} {
		first[name] = s.waitFor(t, 10*time.Second, "the first value of "+name, func(e seenEvent) bool {
			return e.Kind == "credential.rotated" && e.Credential == name
		})
		e := first[name]
		wellFormed(t, e)
		if e.Version != 1 || len(e.Fingerprint) != 16 || e.OldVersion != 0 || e.State == "" {
			t.Errorf("first rotation of %s: %s", name, maskSecrets(e.data))
		}
	}
	if got := first["expiring"]; !got.ExpiresAt.Equal(expiresAt) || got.Source != "exec" {
		t.Errorf("expiring's first rotation: expires_at %v source %q, want %v exec", got.ExpiresAt, got.Source, expiresAt)
	}
	// From now on the expiring credential cannot be refreshed.
	if err := os.Remove(expiringPath); err != nil {
		t.Fatal(err)
	}

	// A file credential rewritten.
	values = append(values, secretValue(t))
	renamed := time.Now()
	writeSecretFile(t, filePath, values[len(values)-1])
	e := s.waitFor(t, 5*time.Second, "the file credential's rotation", func(e seenEvent) bool {
		return e.Kind == "credential.rotated" && e.Credential == "file" && e.Version == 2
	})
	arrivedWithin(t, e, renamed, eventLag, "credential.rotated after a rename")
	if e.OldVersion != 1 || e.OldFingerprint != first["file"].Fingerprint || e.Fingerprint == e.OldFingerprint || e.Source != "file" {
		t.Errorf("file rotation: %s", maskSecrets(e.data))
	}

	// A forced rotation.
	values = append(values, secretValue(t))
	writeTestFile(t, forcedPath, values[len(values)-1])
	forced := time.Now()
	if code, body := p.admin(t, http.MethodPost, "/v1/credentials/forced/rotate", ""); code != http.StatusOK {
		t.Fatalf("POST rotate: %d %s", code, maskSecrets(string(body)))
	}
	e = s.waitFor(t, 5*time.Second, "the forced rotation", func(e seenEvent) bool {
		return e.Kind == "credential.rotated" && e.Credential == "forced" && e.Version == 2
	})
	arrivedWithin(t, e, forced, eventLag, "credential.rotated after POST rotate")

	// A refresh that starts failing.
	broke := time.Now()
	if err := os.Remove(failingPath); err != nil {
		t.Fatal(err)
	}
	e = s.waitFor(t, 5*time.Second, "the failed refresh", func(e seenEvent) bool {
		return e.Kind == "credential.failed" && e.Credential == "failing"
	})
	arrivedWithin(t, e, broke, eventLag, "credential.failed after the command started failing")
	if e.Version != 1 || e.Fingerprint != first["failing"].Fingerprint || e.Error == "" || e.NextRefresh.IsZero() {
		t.Errorf("failed refresh: %s, want version 1 still held, an error and a retry time", maskSecrets(e.data))
	}

	// Expiry, while every refresh fails.
	e = s.waitFor(t, time.Until(expiresAt)+5*time.Second, "the expiry", func(e seenEvent) bool {
		return e.Kind == "credential.expired" && e.Credential == "expiring"
	})
	arrivedWithin(t, e, expiresAt, eventLag, "credential.expired after expires_at")
	if e.arrived.Before(expiresAt) || e.Version != 1 || e.State != "expired" || !e.ExpiresAt.Equal(expiresAt) {
		t.Errorf("expiry event at %v: %s, want version 1 expired at %v", e.arrived, maskSecrets(e.data), expiresAt)
	}
	if !slices.ContainsFunc(s.all(), func(e seenEvent) bool { return e.Kind == "credential.failed" && e.Credential == "expiring" }) {
		t.Error("no credential.failed for the expiring credential's refreshes")
	}

	// IDs increase one by one; no value anywhere in the stream.
	for i, e := range s.all() {
		if e.ID != uint64(i+1) {
			t.Errorf("event %d has id %d: %s", i+1, e.ID, maskSecrets(e.data))
			break
		}
	}
	wantNoValue(t, "the event stream", s.text(), values...)
}

// TestEventsReloadAndRefusals: a reload applied and one refused, each
// within a second of SIGHUP, and a flood of caller refusals that becomes
// at most one event a second, counting every refusal.
func TestEventsReloadAndRefusals(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	tokPath, addedPath := filepath.Join(dir, "tok"), filepath.Join(dir, "added")
	writeSecretFile(t, tokPath, secretValue(t))
	writeSecretFile(t, addedPath, secretValue(t))
	up := newUpstream(t, nil)
	routes := []route{{name: "a", prefix: "/a/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}
	p := startSidekey(t, configYAML(nil, []string{fileCred("tok", tokPath)}, routes))
	waitOK(t, p, "/a/ready")
	s := openEvents(t, p, "")

	two := append(routes, route{name: "b", prefix: "/b/", upstream: up.URL, strip: true, inject: "{credential: added, as: bearer}"})
	hup := time.Now()
	if applied, _ := reloadWith(t, p, configYAML(nil, []string{fileCred("tok", tokPath), fileCred("added", addedPath)}, two)); !applied {
		t.Fatal("the reload was refused")
	}
	e := s.waitFor(t, 5*time.Second, "reload.applied", func(e seenEvent) bool { return e.Kind == "reload.applied" })
	arrivedWithin(t, e, hup, eventLag, "reload.applied after SIGHUP")
	if e.Routes != 2 || !slices.Equal(e.Added, []string{"added"}) || len(e.Removed) != 0 {
		t.Errorf("reload.applied: %s, want 2 routes and the added credential", e.data)
	}
	e = s.waitFor(t, 5*time.Second, "the added credential's first value", func(e seenEvent) bool {
		return e.Kind == "credential.rotated" && e.Credential == "added"
	})
	if e.Version != 1 || e.Fingerprint == "" || e.Source != "file" {
		t.Errorf("the added credential's rotation: %s", maskSecrets(e.data))
	}

	hup = time.Now()
	if applied, _ := reloadWith(t, p, configYAML(nil, []string{fileCred("tok", tokPath)}, two)+"  - bogus: [\n"); applied {
		t.Fatal("an invalid file was applied")
	}
	e = s.waitFor(t, 5*time.Second, "reload.refused", func(e seenEvent) bool { return e.Kind == "reload.refused" })
	arrivedWithin(t, e, hup, eventLag, "reload.refused after SIGHUP")
	if len(e.Problems) == 0 || !strings.HasPrefix(e.Problems[0], p.ConfigPath+":") {
		t.Errorf("reload.refused: %s, want FILE:LINE problems", e.data)
	}

	// A flood of refusals (a foreign Host: 421 host_not_allowed).
	const flood = 40
	began := time.Now()
	for range flood {
		if resp, _ := p.get(t, "/a/x", "Host", "rebind.attacker.example"); resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("foreign Host answered %d, want 421", resp.StatusCode)
		}
	}
	floodTook := time.Since(began)
	e = s.waitFor(t, 5*time.Second, "caller.refused", func(e seenEvent) bool { return e.Kind == "caller.refused" })
	arrivedWithin(t, e, began, eventLag, "caller.refused after the first refusal")
	if e.Reason != "host_not_allowed" {
		t.Errorf("caller.refused: %s", e.data)
	}
	time.Sleep(1100 * time.Millisecond) // past the limit: the next refusal is reported, with those held back
	last := time.Now()
	p.get(t, "/a/x", "Host", "rebind.attacker.example")
	s.waitFor(t, 5*time.Second, "caller.refused after a second", func(e seenEvent) bool {
		return e.Kind == "caller.refused" && e.arrived.After(last)
	})
	var n, total uint64
	for _, e := range s.all() {
		if e.Kind == "caller.refused" {
			n++
			total += e.Count
		}
	}
	maxEvents := uint64(floodTook/time.Second) + 2
	if total != flood+1 || n > maxEvents {
		t.Errorf("%d caller.refused events counting %d refusals; want at most %d events (the flood took %v) counting %d",
			n, total, maxEvents, floodTook.Round(time.Millisecond), flood+1)
	}
}

// TestEventsReplay: ?since=ID and Last-Event-ID replay what followed ID,
// in order, then go on live; Last-Event-ID wins, as EventSource keeps its
// URL when it reconnects.
func TestEventsReplay(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	tokPath := filepath.Join(dir, "tok")
	var values []string
	values = append(values, secretValue(t))
	writeSecretFile(t, tokPath, values[0])
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(nil, []string{fileCred("tok", tokPath)},
		[]route{{name: "a", prefix: "/a/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}))
	live := openEvents(t, p, "?since=0")
	for v := uint64(2); v <= 4; v++ {
		values = append(values, secretValue(t))
		writeSecretFile(t, tokPath, values[len(values)-1])
		live.waitFor(t, 5*time.Second, fmt.Sprintf("version %d", v), func(e seenEvent) bool { return e.Version == v })
	}
	all := live.all()
	if len(all) != 4 {
		t.Fatalf("%d events, want 4 rotations:\n%s", len(all), live.summary())
	}
	for _, tc := range []struct {
		query string
		hdr   []string
		after uint64
	}{
		{"?since=2", nil, 2},
		{"?since=0", []string{"Last-Event-ID", "3"}, 3},
		{"", []string{"Last-Event-ID", "1"}, 1},
	} {
		s := openEvents(t, p, tc.query, tc.hdr...)
		want := all[tc.after:]
		s.waitFor(t, 5*time.Second, "the replay", func(e seenEvent) bool { return e.ID == 4 })
		got := s.all()
		if len(got) != len(want) {
			t.Errorf("%s %v replayed %d events, want %d:\n%s", tc.query, tc.hdr, len(got), len(want), s.summary())
			continue
		}
		for i := range want {
			if got[i].data != want[i].data {
				t.Errorf("%s %v: replayed %s, want %s", tc.query, tc.hdr, maskSecrets(got[i].data), maskSecrets(want[i].data))
			}
		}
	}
	// Live after the replay.
	s := openEvents(t, p, "?since=4")
	values = append(values, secretValue(t))
	writeSecretFile(t, tokPath, values[len(values)-1])
	if e := s.waitFor(t, 5*time.Second, "version 5", func(e seenEvent) bool { return e.Kind == "credential.rotated" }); e.ID != 5 || e.Version != 5 {
		t.Errorf("after ?since=4: %s, want event 5, version 5", maskSecrets(e.data))
	}
	if code, _ := p.admin(t, http.MethodGet, "/v1/events?since=x", ""); code != http.StatusBadRequest {
		t.Errorf("?since=x: %d, want 400", code)
	}
	wantNoValue(t, "the event stream", live.text(), values...)
}

// TestWatchCommand runs `sidekey watch` against a proxy: a rotation shows
// as one line, --json prints the event's JSON, and when the proxy
// restarts on the same admin address watch reconnects by itself and
// shows the new process's events.
func TestWatchCommand(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	tokPath := filepath.Join(dir, "tok")
	values := []string{secretValue(t)}
	writeSecretFile(t, tokPath, values[0])
	up := newUpstream(t, nil)
	adminAddr := freePort(t)
	yamlText := configYAML([]string{"admin:", "  listen: " + adminAddr}, []string{fileCred("tok", tokPath)},
		[]route{{name: "a", prefix: "/a/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}})
	p := startSidekey(t, yamlText)
	waitOK(t, p, "/a/ready")

	text := launch(t, newRunDir(t), nil, "watch", "--admin", p.AdminURL)
	jsonOut := launch(t, newRunDir(t), nil, "watch", "--json", "--admin", p.AdminURL)
	line := func(w *proc, what string, match func(string) bool) string {
		t.Helper()
		var found string
		eventually(t, 10*time.Second, what, func() error {
			for _, l := range w.stdout.All() {
				if match(l) {
					found = l
					return nil
				}
			}
			return fmt.Errorf("stdout so far: %q; stderr: %q", maskSecrets(strings.Join(w.stdout.All(), "\n")),
				maskSecrets(strings.Join(w.stderr.All(), "\n")))
		})
		return found
	}
	following := func(w *proc, n int) {
		t.Helper()
		eventually(t, 10*time.Second, fmt.Sprintf("connection %d of sidekey watch", n), func() error {
			k := 0
			for _, l := range w.stderr.All() {
				if strings.Contains(l, "sidekey watch: following "+p.AdminURL+"/v1/events") {
					k++
				}
			}
			if k < n {
				return fmt.Errorf("stderr: %q", maskSecrets(strings.Join(w.stderr.All(), "\n")))
			}
			return nil
		})
	}
	following(text, 1)
	following(jsonOut, 1)
	values = append(values, secretValue(t))
	writeSecretFile(t, tokPath, values[len(values)-1])
	got := line(text, "a rotation line", func(l string) bool {
		return strings.Contains(l, "credential.rotated") && strings.Contains(l, "  tok  v2  (was v1)  fingerprint ")
	})
	if f := strings.Fields(got); len(f) < 4 || f[2] != "credential.rotated" || !strings.HasSuffix(got, "never expires") {
		t.Errorf("watch line %q: want DATE TIME credential.rotated tok v2 (was v1) fingerprint F never expires", got)
	}
	line(jsonOut, "a JSON line", func(l string) bool {
		return strings.HasPrefix(l, "{") && strings.Contains(l, `"kind":"credential.rotated"`) && strings.Contains(l, `"version":2`)
	})

	// The proxy goes away and comes back on the same admin address.
	if code, ok := p.terminate(25 * time.Second); !ok || code != 0 {
		t.Fatalf("sidekey exited %d (%v) after SIGTERM", code, ok)
	}
	p.asserted.Store(true)
	eventually(t, 10*time.Second, "a reconnection notice", func() error {
		if !slices.ContainsFunc(text.stderr.All(), func(l string) bool { return strings.Contains(l, "reconnecting in") }) {
			return fmt.Errorf("stderr: %q", strings.Join(text.stderr.All(), "\n"))
		}
		return nil
	})
	p2 := startSidekey(t, yamlText)
	waitOK(t, p2, "/a/ready")
	following(text, 2)
	// Its IDs start again at 1, below the one watch last saw: the new
	// process replays all it holds, its first value included.
	line(text, "the new process's first value, replayed", func(l string) bool {
		return strings.Contains(l, "credential.rotated") && strings.Contains(l, "  tok  v1  fingerprint ")
	})
	values = append(values, secretValue(t))
	writeSecretFile(t, tokPath, values[len(values)-1])
	line(text, "the new process's rotation", func(l string) bool {
		n := 0
		for _, l := range text.stdout.All() {
			if strings.Contains(l, "  tok  v2  (was v1)") {
				n++
			}
		}
		return n == 2
	})
	for _, w := range []*proc{text, jsonOut} {
		wantNoValue(t, "sidekey watch's output", strings.Join(append(w.stdout.All(), w.stderr.All()...), "\n"), values...)
		if code, ok := w.terminate(10 * time.Second); !ok || code != 0 {
			t.Errorf("sidekey watch exited %d (%v) on SIGTERM, want 0", code, ok)
		}
	}
}
