package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rssAnon reads a process's anonymous resident memory, in KiB.
func rssAnon(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no RssAnon")
	return 0
}

// A slow-loris crowd — 3,000 connections that never send their headers —
// against max_connections 1000 and header_timeout 2s: sidekey holds at most
// 1,000 of them, so its memory stays bounded; each is closed when its
// header time is up, without an answer; and a normal request is served
// while they are held and after.
func TestSlowLorisBounded(t *testing.T) {
	up := newUpstream(t, nil)
	tok := secretValue(t)
	p := startSidekey(t, configYAML(
		[]string{"limits:", "  max_connections: 1000", "  header_timeout: 2s"},
		[]string{envCred("tok", "TOK")},
		[]route{{name: "r", prefix: "/r/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}),
		withEnv("TOK="+tok))
	waitOK(t, p, "/r/ready")
	before := rssAnon(t, p.PID)

	const crowd = 3000
	conns := make([]net.Conn, 0, crowd)
	var mu sync.Mutex
	closedAt := make([]time.Duration, 0, crowd)
	var answered int
	start := time.Now()
	var wg sync.WaitGroup
	for range crowd {
		c, err := net.DialTimeout("tcp", p.ProxyAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			b, _ := io.ReadAll(c)
			mu.Lock()
			defer mu.Unlock()
			closedAt = append(closedAt, time.Since(start))
			if len(b) > 0 {
				answered++
			}
		})
	}
	dialled := time.Since(start)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})

	// While the crowd is held: a normal request is served (it takes the
	// place of the oldest connection that has sent nothing).
	resp, body, err := p.send(t, http.MethodGet, p.ProxyURL+"/r/during", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a request during the crowd: %v %v %q", resp, err, body)
	}
	during := rssAnon(t, p.PID)

	wg.Wait()
	mu.Lock()
	last := closedAt[len(closedAt)-1]
	early := 0
	for _, d := range closedAt {
		if d < time.Second {
			early++ // refused or displaced at once, never held
		}
	}
	mu.Unlock()
	t.Logf("%d connections dialled in %v; %d closed within 1s (displaced), the last closed at %v; RssAnon %d KiB before, %d KiB with the crowd held",
		crowd, dialled.Round(time.Millisecond), early, last.Round(time.Millisecond), before, during)
	if answered > 0 {
		t.Errorf("%d silent connections got an answer; they should just be closed", answered)
	}
	if early < crowd-1000 {
		t.Errorf("only %d of %d connections were closed at once: more than max_connections were held", early, crowd)
	}
	if last > dialled+2*time.Second+3*time.Second {
		t.Errorf("the last connection closed at %v: not within the header timeout of its dial", last)
	}
	// 1,000 held connections cost each a read buffer and a goroutine; the
	// bound is what max_connections buys: a crowd three times as large
	// costs no more.
	if grown := during - before; grown > 32<<10 {
		t.Errorf("anonymous memory grew by %d KiB with the crowd held", grown)
	}
	if resp, _, err := p.send(t, http.MethodGet, p.ProxyURL+"/r/after", nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a request after the crowd: %v %v", resp, err)
	}
}
