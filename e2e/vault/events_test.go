package vaulte2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// leaseEvent is the part of a /v1/events event these tests read.
type leaseEvent struct {
	ID          uint64    `json:"id"`
	Kind        string    `json:"kind"`
	Time        time.Time `json:"time"`
	Credential  string    `json:"credential"`
	Version     uint64    `json:"version"`
	Fingerprint string    `json:"fingerprint"`
	OldVersion  uint64    `json:"old_version"`
	Reason      string    `json:"reason"`
	Drained     bool      `json:"drained"`
	InFlight    int64     `json:"in_flight"`
	arrived     time.Time
	data        string
}

// events follows p's /v1/events?since=0 until the test ends; what it reads
// goes to the test's secret scan.
type events struct {
	mu     sync.Mutex
	list   []leaseEvent
	raw    bytes.Buffer
	notify chan struct{}
}

func followEvents(t *testing.T, p *sidekeyProc) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.AdminURL+"/v1/events?since=0", nil)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET /v1/events: %v %v", resp, err)
	}
	ev := &events{notify: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		br := bufio.NewReader(io.TeeReader(resp.Body, &lockedWriter{ev}))
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: ")
			if !ok {
				continue
			}
			e := leaseEvent{arrived: time.Now(), data: data}
			if json.Unmarshal([]byte(data), &e) != nil {
				continue
			}
			ev.mu.Lock()
			ev.list = append(ev.list, e)
			close(ev.notify)
			ev.notify = make(chan struct{})
			ev.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
		ev.mu.Lock()
		defer ev.mu.Unlock()
		p.hy.capture(fmt.Sprintf("the event stream of pid %d", p.PID), ev.raw.Bytes())
	})
	return ev
}

type lockedWriter struct{ ev *events }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.ev.mu.Lock()
	defer w.ev.mu.Unlock()
	return w.ev.raw.Write(b)
}

// wait returns the first event match accepts, within limit.
func (ev *events) wait(t *testing.T, limit time.Duration, what string, match func(leaseEvent) bool) leaseEvent {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		ev.mu.Lock()
		for _, e := range ev.list {
			if match(e) {
				ev.mu.Unlock()
				return e
			}
		}
		notify := ev.notify
		ev.mu.Unlock()
		select {
		case <-notify:
		case <-timer.C:
			t.Fatalf("no %s event within %v; events: %s", what, limit, ev.kinds())
		}
	}
}

func (ev *events) has(match func(leaseEvent) bool) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.list {
		if match(e) {
			return true
		}
	}
	return false
}

func (ev *events) kinds() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []string
	for _, e := range ev.list {
		out = append(out, fmt.Sprintf("%s %s v%d", e.Kind, e.Credential, e.Version))
	}
	return strings.Join(out, ", ")
}

// TestBinaryEventsLeaseRevokedAfterDrain: a database-like lease is
// replaced while a request holds it; /v1/events reports the new version
// at once and the old one's revocation only after that request has ended,
// within a second of it, as drained, once Vault no longer has the lease.
func TestBinaryEventsLeaseRevokedAfterDrain(t *testing.T) {
	tv, db := startDBVault(t, 6*time.Second, 10*time.Second)
	beforeScan(t, func() { db.remember(t) })
	holding := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseHeld := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseHeld)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || !db.valid(user, pass) {
			http.Error(w, "no such user", http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/hold" {
			holding <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	p := startSidekey(t, sidekeyYAML(tokenYAML(t, tv.token(t)),
		[]string{credYAML("db", "source: vault-lease", "path: db/creds/app", "renew: true", "revoke_old: true",
			"refresh_before: 4s")},
		[]string{routeYAML("db", up.URL, "{credential: db, as: basic}")}),
		vaultEnv(t, tv)...)
	waitOK(t, p, "/db/ready")
	ev := followEvents(t, p)
	first := ev.wait(t, waitLimit, "first rotation", func(e leaseEvent) bool {
		return e.Kind == "credential.rotated" && e.Credential == "db" && e.Version == 1
	})
	lease1 := tv.leases(t, "db/creds/app/")
	if len(lease1) != 1 {
		t.Fatalf("%d leases, want 1", len(lease1))
	}

	held := make(chan string, 1)
	go func() {
		code, _, err := p.get("/db/hold")
		held <- fmt.Sprintf("%d %v", code, err)
	}()
	select {
	case <-holding:
	case <-time.After(waitLimit):
		t.Fatal("the held request did not reach the upstream")
	}
	second := ev.wait(t, 2*waitLimit, "the replacement", func(e leaseEvent) bool {
		return e.Kind == "credential.rotated" && e.Credential == "db" && e.Version == 2
	})
	if second.OldVersion != 1 || second.Fingerprint == first.Fingerprint {
		t.Errorf("the replacement: %s", p.hy.mask(second.data))
	}
	revokedV1 := func(e leaseEvent) bool {
		return e.Kind == "credential.revoked" && e.Credential == "db" && e.Version == 1
	}
	// Traffic on the new version while the old one is held: no revocation.
	load := startTraffic(t, p, 2, "/db/load")
	within(t, 300*time.Millisecond+time.Second, "some requests on version 2", func() bool { return load.ok.Load() >= 10 })
	if ev.has(revokedV1) {
		t.Fatalf("version 1 reported revoked while a request holds it: %s", ev.kinds())
	}

	released := time.Now()
	releaseHeld()
	if got := <-held; !strings.HasPrefix(got, "200 ") {
		t.Errorf("the held request: %s", got)
	}
	e := ev.wait(t, waitLimit, "credential.revoked for version 1", revokedV1)
	lag := e.arrived.Sub(released)
	if lag > time.Second || !e.Drained || e.Reason != "superseded" || e.Fingerprint != first.Fingerprint {
		t.Errorf("revocation event %v after the release: %s; want within 1s, superseded, drained, version 1's fingerprint",
			lag.Round(time.Millisecond), p.hy.mask(e.data))
	} else {
		t.Logf("credential.revoked arrived %v after the held request was released", lag.Round(time.Millisecond))
	}
	if _, ok := tv.leaseExists(lease1[0]); ok {
		t.Error("the event reported a revocation while Vault still has the lease")
	}
	load.check(t)
}
