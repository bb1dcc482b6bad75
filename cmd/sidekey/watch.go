package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sidekey/sidekey/events"
	"github.com/sidekey/sidekey/injector"
)

const (
	// watchIdle is how long a stream may stay silent (the server sends a
	// heartbeat every 15s) before watch takes it for dead and reconnects.
	watchIdle = 45 * time.Second
	// watchRetryMin and watchRetryMax bound the backoff between
	// reconnections.
	watchRetryMin = 250 * time.Millisecond
	watchRetryMax = 10 * time.Second
)

// errWatchRefused is a refusal that reconnecting will not change (a 4xx:
// an older sidekey without /v1/events, a wrong URL).
var errWatchRefused = errors.New("refused")

// watcher follows one admin API's event stream.
type watcher struct {
	url    string
	asJSON bool
	out    io.Writer
	errs   io.Writer
	client *http.Client
	idle   time.Duration
	loc    *time.Location
	lastID string // the last event seen, for Last-Event-ID
}

// cmdWatch prints /v1/events as it happens, one line per event (or its
// JSON with --json), until interrupted. A dropped connection is retried
// with backoff, and the stream resumes after the last event seen, so that
// nothing is missed that the proxy still holds.
func cmdWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	admin, asJSON, pos, ok := adminFlags("watch", args, stderr)
	if !ok || len(pos) > 0 {
		fmt.Fprintln(stderr, "usage: sidekey watch [--admin URL] [--json]")
		return exitUsage
	}
	w := &watcher{url: admin + "/v1/events", asJSON: asJSON, out: stdout, errs: stderr,
		client: &http.Client{Transport: &http.Transport{Proxy: nil}}, idle: watchIdle, loc: time.Local}
	if err := w.run(ctx); err != nil {
		fmt.Fprintf(stderr, "sidekey watch: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// run follows the stream until ctx ends (nil) or the server refuses it.
func (w *watcher) run(ctx context.Context) error {
	for failures := 0; ; {
		got, err := w.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errWatchRefused) {
			return err
		}
		if got {
			failures = 0
		}
		d := injector.Backoff(failures, watchRetryMin, watchRetryMax, mathrand.Float64())
		failures++
		fmt.Fprintf(w.errs, "sidekey watch: %v; reconnecting in %v\n", err, d.Round(time.Millisecond))
		if !injector.Sleep(ctx, injector.SystemClock{}, d) {
			return nil
		}
	}
}

// follow reads one connection's stream until it ends; got reports that it
// delivered anything (so the backoff starts over).
func (w *watcher) follow(ctx context.Context) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return false, fmt.Errorf("%w: %v", errWatchRefused, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if w.lastID != "" {
		req.Header.Set("Last-Event-ID", w.lastID)
	}
	if tok := os.Getenv("SIDEKEY_ADMIN_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 4:
		return false, fmt.Errorf("%s: %w: %s", w.url, errWatchRefused, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("%s: %s", w.url, resp.Status)
	}
	fmt.Fprintf(w.errs, "sidekey watch: following %s\n", w.url)
	// A stream that stays silent past the heartbeats is dead: cut it.
	alive := time.AfterFunc(w.idle, cancel)
	defer alive.Stop()
	r := bufio.NewReader(resp.Body)
	for {
		msg, err := readSSE(r)
		if err != nil {
			if ctx.Err() != nil && !alive.Stop() {
				err = fmt.Errorf("no data for %v", w.idle)
			} else if err == io.EOF {
				err = errors.New("the stream ended")
			}
			return got, err
		}
		got = true
		alive.Reset(w.idle)
		if msg.data == "" {
			continue // a comment: a heartbeat
		}
		if msg.id != "" {
			w.lastID = msg.id
		}
		w.print(msg)
	}
}

func (w *watcher) print(msg sseMessage) {
	if w.asJSON {
		fmt.Fprintln(w.out, msg.data)
		return
	}
	var e events.Event
	if err := json.Unmarshal([]byte(msg.data), &e); err != nil {
		fmt.Fprintf(w.errs, "sidekey watch: event %s: %v\n", msg.id, err)
		return
	}
	if e.Kind == "" {
		e.Kind = msg.event
	}
	fmt.Fprintln(w.out, formatEvent(e, w.loc))
}

// sseMessage is one block of an event stream: a message, or comments
// only (data empty).
type sseMessage struct{ id, event, data string }

// readSSE reads one block of a text/event-stream, up to its blank line.
func readSSE(r *bufio.Reader) (sseMessage, error) {
	var m sseMessage
	var data []string
	seen := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return m, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if seen {
				m.data = strings.Join(data, "\n")
				return m, nil
			}
			continue
		}
		seen = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			m.id = value
		case "event":
			m.event = value
		case "data":
			data = append(data, value)
		}
	}
}

// formatEvent renders an event as one line: its time, its kind, then what
// it is about. Durations count from the event's own time.
func formatEvent(e events.Event, loc *time.Location) string {
	at := e.Time.In(loc)
	var p []string
	switch e.Kind {
	case events.CredentialRotated:
		p = append(p, e.Credential, vnum(e.Version))
		if e.OldVersion != 0 {
			p = append(p, "(was "+vnum(e.OldVersion)+")")
		}
		p = append(p, "fingerprint "+e.Fingerprint, expiry(e.ExpiresAt, at, loc))
	case events.CredentialFailed:
		if e.Version != 0 {
			p = append(p, e.Credential, vnum(e.Version)+" still served")
		} else {
			p = append(p, e.Credential, "no value")
		}
		if !e.NextRefresh.IsZero() {
			p = append(p, "retry in "+e.NextRefresh.Sub(e.Time).Round(time.Second).String())
		}
		p = append(p, "error: "+e.Error)
	case events.CredentialExpired:
		p = append(p, e.Credential, vnum(e.Version), e.State, "expires_at "+e.ExpiresAt.In(loc).Format(time.TimeOnly))
	case events.CredentialRevoked, events.CredentialRevokeFailed:
		how := e.Reason
		if e.Drained {
			how += ", drained"
		} else if e.InFlight > 0 {
			how += fmt.Sprintf(", %d requests still in flight", e.InFlight)
		}
		p = append(p, e.Credential, vnum(e.Version), how)
		if e.Error != "" {
			p = append(p, "error: "+e.Error)
		}
	case events.CertificateIssued, events.CertificateRenewed:
		p = append(p, e.Certificate, "serial "+e.Serial)
		if e.OldSerial != "" {
			p = append(p, "(was "+e.OldSerial+")")
		}
		p = append(p, expiry(e.NotAfter, at, loc))
	case events.ReloadApplied:
		p = append(p, plural(e.Routes, "route"))
		for _, n := range e.Added {
			p = append(p, "+"+n)
		}
		for _, n := range e.Removed {
			p = append(p, "-"+n)
		}
	case events.ReloadRefused:
		p = append(p, strings.Join(e.Problems, "; "))
	case events.CallerRefused:
		p = append(p, e.Reason, plural(int(e.Count), "request"))
	default:
		p = append(p, e.Credential+e.Certificate)
	}
	return fmt.Sprintf("%s  %-24s  %s", at.Format(time.DateTime), e.Kind, strings.Join(nonEmpty(p), "  "))
}

func vnum(n uint64) string { return fmt.Sprintf("v%d", n) }

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// expiry says when a value or certificate expires, from the event's time.
func expiry(t, from time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "never expires"
	}
	return fmt.Sprintf("expires in %v (%s)", t.Sub(from).Round(time.Second), t.In(loc).Format(time.TimeOnly))
}

func nonEmpty(ss []string) []string {
	out := ss[:0]
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
