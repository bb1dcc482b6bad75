package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidekey/sidekey/events"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/proxy"
)

func TestFormatEvent(t *testing.T) {
	at := time.Date(2026, 12, 8, 10, 15, 3, 0, time.UTC)
	for _, tc := range []struct {
		e    events.Event
		want string
	}{
		{events.Event{Kind: events.CredentialRotated, Time: at, Credential: "github", Version: 3, OldVersion: 2,
			Fingerprint: "0123456789abcdef", ExpiresAt: at.Add(30 * time.Minute)},
			"2026-12-08 10:15:03  credential.rotated        github  v3  (was v2)  fingerprint 0123456789abcdef  expires in 30m0s (10:45:03)"},
		{events.Event{Kind: events.CredentialRotated, Time: at, Credential: "key", Version: 1, Fingerprint: "aa"},
			"2026-12-08 10:15:03  credential.rotated        key  v1  fingerprint aa  never expires"},
		{events.Event{Kind: events.CredentialFailed, Time: at, Credential: "github", Version: 3,
			NextRefresh: at.Add(4 * time.Second), Error: "issuer said no"},
			"2026-12-08 10:15:03  credential.failed         github  v3 still served  retry in 4s  error: issuer said no"},
		{events.Event{Kind: events.CredentialFailed, Time: at, Credential: "db", Error: "sealed"},
			"2026-12-08 10:15:03  credential.failed         db  no value  error: sealed"},
		{events.Event{Kind: events.CredentialExpired, Time: at, Credential: "tok", Version: 2, State: "expired", ExpiresAt: at},
			"2026-12-08 10:15:03  credential.expired        tok  v2  expired  expires_at 10:15:03"},
		{events.Event{Kind: events.CredentialRevoked, Time: at, Credential: "db", Version: 1, Reason: "superseded", Drained: true},
			"2026-12-08 10:15:03  credential.revoked        db  v1  superseded, drained"},
		{events.Event{Kind: events.CredentialRevoked, Time: at, Credential: "db", Version: 1, Reason: "superseded", InFlight: 2},
			"2026-12-08 10:15:03  credential.revoked        db  v1  superseded, 2 requests still in flight"},
		{events.Event{Kind: events.CredentialRevokeFailed, Time: at, Credential: "db", Version: 4, Reason: "exit", Error: "403"},
			"2026-12-08 10:15:03  credential.revoke_failed  db  v4  exit  error: 403"},
		{events.Event{Kind: events.CertificateRenewed, Time: at, Certificate: "api.example", Serial: "3a:0f",
			OldSerial: "01:02", NotAfter: at.Add(12 * time.Second)},
			"2026-12-08 10:15:03  certificate.renewed       api.example  serial 3a:0f  (was 01:02)  expires in 12s (10:15:15)"},
		{events.Event{Kind: events.CertificateIssued, Time: at, Certificate: "mtls", Serial: "7b", NotAfter: at.Add(time.Hour)},
			"2026-12-08 10:15:03  certificate.issued        mtls  serial 7b  expires in 1h0m0s (11:15:03)"},
		{events.Event{Kind: events.ReloadApplied, Time: at, Routes: 3, Added: []string{"new"}, Removed: []string{"old"}},
			"2026-12-08 10:15:03  reload.applied            3 routes  +new  -old"},
		{events.Event{Kind: events.ReloadApplied, Time: at, Routes: 1},
			"2026-12-08 10:15:03  reload.applied            1 route"},
		{events.Event{Kind: events.ReloadRefused, Time: at, Problems: []string{"a.yaml:3: x", "a.yaml:9: y"}},
			"2026-12-08 10:15:03  reload.refused            a.yaml:3: x; a.yaml:9: y"},
		{events.Event{Kind: events.CallerRefused, Time: at, Reason: "host_not_allowed", Count: 12},
			"2026-12-08 10:15:03  caller.refused            host_not_allowed  12 requests"},
		{events.Event{Kind: "credential.future", Time: at, Credential: "x"},
			"2026-12-08 10:15:03  credential.future         x"},
	} {
		if got := formatEvent(tc.e, time.UTC); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.e.Kind, got, tc.want)
		}
	}
}

func TestReadSSE(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("retry: 2000\n: hello\n\n\nid: 7\nevent: x\ndata: {\"a\":1}\r\n\r\n: heartbeat\n\nid: 8\ndata: a\ndata: b\n\n"))
	var got []sseMessage
	for {
		m, err := readSSE(r)
		if err != nil {
			break
		}
		got = append(got, m)
	}
	want := []sseMessage{{}, {id: "7", event: "x", data: `{"a":1}`}, {}, {id: "8", data: "a\nb"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// syncBuffer is an io.Writer the test reads while the watcher writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveAdmin serves a real admin API with broker b on addr ("" picks a
// port) and returns its address and a stop function.
func serveAdmin(t *testing.T, addr string, b *events.Broker) (string, func()) {
	t.Helper()
	set, err := injector.NewSet(nil, injector.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := &proxy.Admin{Credentials: set, Required: func() []string { return nil }, Events: b, Heartbeat: 50 * time.Millisecond}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Serve(ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = a.Shutdown(ctx)
			<-done
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// watch follows the admin API at addr the way cmdWatch does, until the
// test ends.
func startWatch(t *testing.T, addr string, asJSON bool) (*syncBuffer, *syncBuffer) {
	t.Helper()
	out, errs := &syncBuffer{}, &syncBuffer{}
	w := &watcher{url: "http://" + addr + "/v1/events", asJSON: asJSON, out: out, errs: errs,
		client: &http.Client{Transport: &http.Transport{}}, idle: time.Second, loc: time.UTC}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch ended with %v", err)
		}
	})
	return out, errs
}

// watch prints each event once, and after the connection drops it
// reconnects and resumes after the last event it printed: the events
// published meanwhile arrive from the replay, none twice.
func TestWatchReconnectsAndResumes(t *testing.T) {
	b := &events.Broker{}
	addr, stop := serveAdmin(t, "", b)
	out, errs := startWatch(t, addr, false)
	waitFor(t, "the watch to subscribe", func() bool { return b.Subscribers() == 1 })
	b.Publish(events.Event{Kind: events.CredentialRotated, Credential: "one", Version: 1, Fingerprint: "f1"})
	b.Publish(events.Event{Kind: events.CredentialRotated, Credential: "two", Version: 1, Fingerprint: "f2"})
	waitFor(t, "two lines", func() bool { return len(out.lines()) == 2 })

	stop()
	b.Publish(events.Event{Kind: events.CredentialFailed, Credential: "one", Version: 1, Error: "gone"})
	b.Publish(events.Event{Kind: events.ReloadApplied, Routes: 2})
	serveAdmin(t, addr, b) // the proxy is back on the same address
	waitFor(t, "four lines", func() bool { return len(out.lines()) >= 4 })
	b.Publish(events.Event{Kind: events.CallerRefused, Reason: "host_not_allowed", Count: 3})
	waitFor(t, "five lines", func() bool { return len(out.lines()) >= 5 })

	lines := out.lines()
	for i, want := range []string{"credential.rotated        one  v1", "credential.rotated        two  v1",
		"credential.failed         one  v1 still served  error: gone", "reload.applied            2 routes",
		"caller.refused            host_not_allowed  3 requests"} {
		if i >= len(lines) || !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want it to contain %q (all: %q)", i+1, lines[i], want, lines)
		}
	}
	if len(lines) != 5 {
		t.Errorf("%d lines, want 5, each event once: %q", len(lines), lines)
	}
	if e := strings.Join(errs.lines(), "\n"); !strings.Contains(e, "reconnecting in") {
		t.Errorf("stderr %q: want a reconnection notice", e)
	}
}

func TestWatchJSON(t *testing.T) {
	b := &events.Broker{}
	addr, _ := serveAdmin(t, "", b)
	out, _ := startWatch(t, addr, true)
	waitFor(t, "the watch to subscribe", func() bool { return b.Subscribers() == 1 })
	b.Publish(events.Event{Kind: events.CredentialRevoked, Credential: "db", Version: 1, Reason: "superseded", Drained: true})
	waitFor(t, "a line", func() bool { return out.lines()[0] != "" })
	var e events.Event
	if err := json.Unmarshal([]byte(out.lines()[0]), &e); err != nil || e.ID != 1 || e.Kind != events.CredentialRevoked || !e.Drained {
		t.Errorf("--json printed %q (%v)", out.lines()[0], err)
	}
}

// A stream that goes silent (no heartbeat) is taken for dead after the
// idle limit, and the watch reconnects with Last-Event-ID.
func TestWatchReconnectsASilentStream(t *testing.T) {
	var mu sync.Mutex
	var lastIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		n := len(lastIDs)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		if n == 1 {
			w.Write([]byte("id: 41\nevent: reload.applied\ndata: {\"id\":41,\"kind\":\"reload.applied\",\"routes\":1}\n\n"))
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then nothing, not even a heartbeat
	}))
	defer srv.Close()
	startWatch(t, strings.TrimPrefix(srv.URL, "http://"), false)
	waitFor(t, "a reconnection", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lastIDs) >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if lastIDs[0] != "" || lastIDs[1] != "41" {
		t.Errorf("Last-Event-ID sent %q, want none then 41", lastIDs)
	}
}

// A refusal (an older sidekey without /v1/events) ends the watch.
func TestWatchRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	w := &watcher{url: srv.URL + "/v1/events", out: &syncBuffer{}, errs: &syncBuffer{},
		client: srv.Client(), idle: time.Second, loc: time.UTC}
	if err := w.run(context.Background()); !errors.Is(err, errWatchRefused) {
		t.Errorf("run = %v, want a refusal", err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"watch", "--admin", srv.URL}, nil, &stdout, &stderr); code != exitFailed ||
		!strings.Contains(stderr.String(), "404") {
		t.Errorf("sidekey watch against a 404: exit %d, stderr %q", code, stderr.String())
	}
	if code := run(context.Background(), []string{"watch", "extra"}, nil, &stdout, &stderr); code != exitUsage {
		t.Errorf("sidekey watch extra: exit %d, want usage", code)
	}
}

// readSSE takes any input without panicking or looping, and gives back
// the data of a frame the admin API writes, whatever it holds.
func FuzzReadSSE(f *testing.F) {
	f.Add("id: 1\nevent: x\ndata: {}\n\n", `{"kind":"reload.refused","problems":["a\nb"]}`)
	f.Add(": heartbeat\n\n\r\n\n", "")
	f.Add("data\ndata:\ndata: a\r\n\n", "x")
	f.Fuzz(func(t *testing.T, stream, payload string) {
		r := bufio.NewReader(strings.NewReader(stream))
		for range len(stream) + 1 {
			if _, err := readSSE(r); err != nil {
				break
			}
		}
		data, err := json.Marshal(payload) // as the server writes data: one JSON line
		if err != nil {
			return
		}
		frame := "id: 7\nevent: k\ndata: " + string(data) + "\n\n"
		m, err := readSSE(bufio.NewReader(strings.NewReader(frame)))
		if err != nil || m.id != "7" || m.event != "k" || m.data != string(data) {
			t.Fatalf("frame %q read as %+v, %v", frame, m, err)
		}
	})
}
