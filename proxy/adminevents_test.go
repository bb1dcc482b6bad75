package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/events"
	"github.com/sidekey/sidekey/injector"
)

// startEventsAdmin serves an Admin with a broker on 127.0.0.1 and returns
// its base URL. srv, when set, is the fasthttp server to use (to test
// other timeouts); nil is one like Serve's.
func startEventsAdmin(t *testing.T, a *Admin, srv *fasthttp.Server) string {
	t.Helper()
	set, err := injector.NewSet(nil, injector.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.Credentials, a.Required = set, func() []string { return nil }
	if a.Events == nil {
		a.Events = &events.Broker{}
	}
	if srv == nil { // as Serve builds it; set here, before Serve, for the race detector
		srv = &fasthttp.Server{ReadTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second,
			MaxRequestBodySize: 4 << 10, NoDefaultServerHeader: true, CloseOnShutdown: true}
	}
	srv.Handler = a.handle
	a.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = a.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
		<-served
	})
	return "http://" + ln.Addr().String()
}

// sseFrame is one dispatched SSE message, or a comment.
type sseFrame struct {
	id, event, data, comment string
}

// sseReader reads SSE frames from a response body.
type sseReader struct {
	br *bufio.Reader
}

// next returns the next message or comment block; io.EOF at the end.
func (r *sseReader) next() (sseFrame, error) {
	var f sseFrame
	seen := false
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			if seen && err == io.EOF {
				return f, nil
			}
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if seen {
				return f, nil
			}
			continue
		}
		seen = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			f.comment += value
		case "id":
			f.id = value
		case "event":
			f.event = value
		case "data":
			f.data += value
		}
	}
}

// nextEvent skips comments and decodes the next message's data.
func (r *sseReader) nextEvent(t *testing.T) (sseFrame, events.Event) {
	t.Helper()
	for {
		f, err := r.next()
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if f.comment != "" && f.data == "" {
			continue
		}
		var e events.Event
		if err := json.Unmarshal([]byte(f.data), &e); err != nil {
			t.Fatalf("data %q is not an event: %v", f.data, err)
		}
		return f, e
	}
}

// openStream GETs /v1/events with the given query and headers and checks
// the answer is an event stream. The body is closed at cleanup.
func openStream(t *testing.T, base, query string, hdr ...string) (*http.Response, *sseReader) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/events"+query, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /v1/events%s: %d %q %q", query, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
	}
	return resp, &sseReader{br: bufio.NewReader(resp.Body)}
}

func TestEventStreamLive(t *testing.T) {
	a := &Admin{Heartbeat: 30 * time.Millisecond, Scrub: func(b []byte) []byte {
		return []byte(strings.ReplaceAll(string(b), "s3cr3t-value", "[REDACTED]"))
	}}
	base := startEventsAdmin(t, a, nil)
	a.Events.Publish(events.Event{Kind: events.ReloadApplied}) // before: not replayed without since
	_, r := openStream(t, base, "")

	first, err := r.next()
	if err != nil || !strings.Contains(first.comment, "sidekey events") {
		t.Fatalf("first frame %+v, %v; want the opening comment", first, err)
	}
	// The subscription is made before the stream is written: publish now.
	at := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	a.Events.Publish(events.Event{Kind: events.CredentialRotated, Time: at, Credential: "github",
		Version: 3, OldVersion: 2, Fingerprint: "0123456789abcdef", ExpiresAt: at.Add(time.Hour)})
	a.Events.Publish(events.Event{Kind: events.CredentialFailed, Credential: "github", Error: "issuer said s3cr3t-value"})
	f, e := r.nextEvent(t)
	if f.id != "2" || f.event != "credential.rotated" || e.ID != 2 || e.Credential != "github" || e.Version != 3 ||
		!e.Time.Equal(at) || !e.ExpiresAt.Equal(at.Add(time.Hour)) {
		t.Errorf("first event: frame %+v, event %+v", f, e)
	}
	if !strings.Contains(f.data, `"time":"2026-12-08T10:00:00Z"`) || strings.Contains(f.data, "issued_at") {
		t.Errorf("data %s: want the time in RFC 3339 and unset fields left out", f.data)
	}
	f, e = r.nextEvent(t)
	if f.event != "credential.failed" || e.Error != "issuer said [REDACTED]" || strings.Contains(f.data, "s3cr3t") {
		t.Errorf("second event %+v: want its data scrubbed", f)
	}

	// Nothing happens: heartbeats keep the stream alive.
	for beats := 0; beats < 3; {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.comment == "heartbeat" {
			beats++
		} else if f.data != "" {
			t.Fatalf("unexpected event %+v", f)
		}
	}
}

// ?since=ID and Last-Event-ID replay what followed ID; the header wins,
// as EventSource keeps its URL on reconnection; a bad ID is 400.
func TestEventStreamReplay(t *testing.T) {
	a := &Admin{Heartbeat: time.Hour}
	base := startEventsAdmin(t, a, nil)
	for i := range 5 {
		a.Events.Publish(events.Event{Kind: events.CredentialRotated, Credential: "c", Version: uint64(i + 1)})
	}
	for _, tc := range []struct {
		query string
		hdr   []string
		first uint64
	}{
		{"?since=0", nil, 1},
		{"?since=3", nil, 4},
		{"", []string{"Last-Event-ID", "2"}, 3},
		{"?since=1", []string{"Last-Event-ID", "4"}, 5},
		{"?since=99", nil, 1}, // an ID of an earlier process: everything held
	} {
		_, r := openStream(t, base, tc.query, tc.hdr...)
		for want := tc.first; want <= 5; want++ {
			if f, e := r.nextEvent(t); e.ID != want || f.id != fmt.Sprint(want) {
				t.Errorf("%s %v: got event %d, want %d", tc.query, tc.hdr, e.ID, want)
			}
		}
		a.Events.Publish(events.Event{Kind: events.ReloadApplied})
		if _, e := r.nextEvent(t); e.Kind != events.ReloadApplied {
			t.Errorf("%s %v: after the replay got %+v, want the live event", tc.query, tc.hdr, e)
		}
	}
	for _, q := range []string{"?since=abc", "?since=-1"} {
		resp, err := http.Get(base + "/v1/events" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /v1/events%s = %d, want 400", q, resp.StatusCode)
		}
	}
}

// smallSendBuffers makes the server's side of each connection's send
// buffer small, so that a client that does not read blocks writes soon.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// A client that stops reading costs the publisher nothing: Publish keeps
// its pace, and the stream ends either because its backlog filled (the
// broker drops the subscription) or because a write to the client waited
// writeWait (the connection is closed); either way the subscription and
// the connection go.
func TestEventStreamSlowClientDropped(t *testing.T) {
	for _, tc := range []struct {
		name    string
		buffer  int
		dropped uint64
	}{
		{"backlog full", 16, 1},
		{"write stalled", 100000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Admin{Heartbeat: time.Hour, writeWait: 300 * time.Millisecond, Events: &events.Broker{Buffer: tc.buffer}}
			set, _ := injector.NewSet(nil, injector.SetOptions{})
			a.Credentials, a.Required = set, func() []string { return nil }
			a.srv = &fasthttp.Server{Handler: a.handle, CloseOnShutdown: true}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan struct{})
			go func() { defer close(served); _ = a.Serve(smallSendBuffers{ln}) }()
			t.Cleanup(func() { _ = a.Shutdown(context.Background()); <-served })
			addr := ln.Addr().String()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
			fmt.Fprintf(c, "GET /v1/events HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
			deadline := time.Now().Add(10 * time.Second)
			for a.Events.Subscribers() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the stream did not subscribe")
				}
				time.Sleep(5 * time.Millisecond)
			}

			big := strings.Repeat("x", 4096)
			start := time.Now()
			var slowest time.Duration
			for range 2000 {
				t0 := time.Now()
				a.Events.Publish(events.Event{Kind: events.ReloadRefused, Problems: []string{big}})
				slowest = max(slowest, time.Since(t0))
			}
			t.Logf("2000 events of 4 KiB to a client that does not read: %v, slowest Publish %v", time.Since(start), slowest)
			if slowest > 100*time.Millisecond {
				t.Errorf("a Publish took %v: it waited for the slow client", slowest)
			}
			for a.Events.Subscribers() != 0 || a.srv.GetOpenConnectionsCount() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d subscribers, %d connections still open; want the slow client gone",
						a.Events.Subscribers(), a.srv.GetOpenConnectionsCount())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := a.Events.Dropped(); got != tc.dropped {
				t.Errorf("%d subscriptions dropped for a full backlog, want %d", got, tc.dropped)
			}
			t.Logf("gone %v after the first event", time.Since(start).Round(time.Millisecond))
		})
	}
}

// The admin server's read and idle timeouts do not cut a stream that
// outlives them, and shutting the server down ends it at once.
func TestEventStreamOutlivesTimeoutsAndEndsOnShutdown(t *testing.T) {
	a := &Admin{Heartbeat: 20 * time.Millisecond}
	base := startEventsAdmin(t, a, &fasthttp.Server{ReadTimeout: 100 * time.Millisecond, IdleTimeout: 100 * time.Millisecond,
		CloseOnShutdown: true})
	_, r := openStream(t, base, "")
	until := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(until) {
		if _, err := r.next(); err != nil {
			t.Fatalf("the stream broke off after %v: %v", 600*time.Millisecond-time.Until(until), err)
		}
	}
	a.Events.Publish(events.Event{Kind: events.ReloadApplied})
	if _, e := r.nextEvent(t); e.Kind != events.ReloadApplied {
		t.Fatalf("after the timeouts got %+v", e)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- a.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown with a stream open: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown waited for the open stream")
	}
	for {
		if _, err := r.next(); err != nil {
			break // the stream ended
		}
	}
	if n := a.Events.Subscribers(); n != 0 {
		t.Errorf("%d subscribers after shutdown", n)
	}
}

func TestEventStreamHeadAndMethods(t *testing.T) {
	a := &Admin{}
	base := startEventsAdmin(t, a, nil)
	resp, err := http.Head(base + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || a.Events.Subscribers() != 0 {
		t.Errorf("HEAD: %d %q, %d subscribers", resp.StatusCode, resp.Header.Get("Content-Type"), a.Events.Subscribers())
	}
	resp, err = http.Post(base+"/v1/events", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/events = %d, want 405", resp.StatusCode)
	}
}
