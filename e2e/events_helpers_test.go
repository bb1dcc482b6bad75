package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// wireEvent is an event as /v1/events sends it (docs/SPEC.md), decoded
// here on its own so that the suite pins the wire format.
type wireEvent struct {
	ID             uint64    `json:"id"`
	Kind           string    `json:"kind"`
	Time           time.Time `json:"time"`
	Credential     string    `json:"credential"`
	Source         string    `json:"source"`
	Version        uint64    `json:"version"`
	Fingerprint    string    `json:"fingerprint"`
	OldVersion     uint64    `json:"old_version"`
	OldFingerprint string    `json:"old_fingerprint"`
	State          string    `json:"state"`
	ExpiresAt      time.Time `json:"expires_at"`
	NextRefresh    time.Time `json:"next_refresh"`
	Error          string    `json:"error"`
	Reason         string    `json:"reason"`
	Count          uint64    `json:"count"`
	Drained        bool      `json:"drained"`
	Routes         int       `json:"routes"`
	Added          []string  `json:"added"`
	Removed        []string  `json:"removed"`
	Problems       []string  `json:"problems"`
}

// seenEvent is one event read from a stream, with its SSE fields and
// when it arrived.
type seenEvent struct {
	wireEvent
	sseID, sseEvent, data string
	arrived               time.Time
}

// eventStream reads GET /v1/events in the background. Everything it reads
// is kept for the secret scan.
type eventStream struct {
	resp *http.Response

	mu     sync.Mutex
	events []seenEvent
	raw    bytes.Buffer
	err    error
	notify chan struct{} // closed and replaced on each new event
}

// openEvents opens /v1/events+query on p's admin API with the header
// pairs hdr, checks it is an event stream, and reads it until the test
// ends.
func openEvents(t testing.TB, p *proc, query string, hdr ...string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.AdminURL+"/v1/events"+query, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /v1/events%s: %v", query, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /v1/events%s: %d %q", query, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &eventStream{resp: resp, notify: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.read()
	}()
	name := t.Name()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
		s.mu.Lock()
		defer s.mu.Unlock()
		recordCapture("the event stream "+query+" in "+name, s.raw.Bytes())
	})
	return s
}

func (s *eventStream) read() {
	br := bufio.NewReader(s.resp.Body)
	var cur seenEvent
	var data []string
	for {
		line, err := br.ReadString('\n')
		s.mu.Lock()
		s.raw.WriteString(line)
		s.mu.Unlock()
		if err != nil {
			s.mu.Lock()
			s.err = err
			close(s.notify)
			s.notify = make(chan struct{})
			s.mu.Unlock()
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				cur.sseID = value
			case "event":
				cur.sseEvent = value
			case "data":
				data = append(data, value)
			}
			continue
		}
		if len(data) == 0 { // comments only
			cur = seenEvent{}
			continue
		}
		cur.data = strings.Join(data, "\n")
		cur.arrived = time.Now()
		if err := json.Unmarshal([]byte(cur.data), &cur.wireEvent); err != nil {
			cur.Kind = "undecodable: " + err.Error()
		}
		s.mu.Lock()
		s.events = append(s.events, cur)
		close(s.notify)
		s.notify = make(chan struct{})
		s.mu.Unlock()
		cur, data = seenEvent{}, nil
	}
}

// all returns the events read so far.
func (s *eventStream) all() []seenEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenEvent(nil), s.events...)
}

// text is everything read so far.
func (s *eventStream) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

// waitFor returns the first event, from the start of the stream, that
// match accepts, waiting up to timeout.
func (s *eventStream) waitFor(t testing.TB, timeout time.Duration, what string, match func(seenEvent) bool) seenEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for _, e := range s.events {
			if match(e) {
				s.mu.Unlock()
				return e
			}
		}
		notify, err := s.notify, s.err
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("%s: the stream ended (%v) first; it had:\n%s", what, err, s.summary())
		}
		select {
		case <-notify:
		case <-deadline.C:
			t.Fatalf("%s: no such event within %v; the stream had:\n%s", what, timeout, s.summary())
		}
	}
}

// summary lists the events read, one line each, secrets masked.
func (s *eventStream) summary() string {
	var b strings.Builder
	for _, e := range s.all() {
		fmt.Fprintf(&b, "  %s %s\n", e.arrived.Format("15:04:05.000"), e.data)
	}
	return maskSecrets(b.String())
}

// arrivedWithin fails the test unless the event arrived at most limit after its
// cause.
func arrivedWithin(t testing.TB, e seenEvent, cause time.Time, limit time.Duration, what string) {
	t.Helper()
	lag := e.arrived.Sub(cause)
	if lag > limit {
		t.Errorf("%s arrived %v after its cause, want within %v", what, lag.Round(time.Millisecond), limit)
	} else {
		t.Logf("%s arrived %v after its cause", what, lag.Round(time.Millisecond))
	}
}

// wellFormed checks the SSE fields agree with the JSON.
func wellFormed(t testing.TB, e seenEvent) {
	t.Helper()
	if e.sseID != fmt.Sprint(e.ID) || e.sseEvent != e.Kind || e.ID == 0 || e.Time.IsZero() {
		t.Errorf("event frame id %q event %q, data %s: want id and event to match the JSON, with a time", e.sseID, e.sseEvent, e.data)
	}
}
