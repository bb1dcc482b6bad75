package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFileRotationUnderLoad replaces a file credential every 100 ms for
// 10 s while 32 keep-alive connections send requests continuously. The
// upstream accepts only tokens written so far. No request may fail, and
// every token must reach the upstream within 100 ms of its rename; a token
// current while the test process itself could not run for 50 ms or more
// is reported but not counted, since then the lag is the machine's.
func TestFileRotationUnderLoad(t *testing.T) {
	const (
		rotations = 100
		every     = 100 * time.Millisecond
		clients   = 32
		maxLag    = 100 * time.Millisecond
	)
	dir := dataDir(t)
	path := filepath.Join(dir, "token")

	var (
		mu        sync.Mutex
		accepted  = map[string]bool{}
		firstSeen = map[string]time.Time{}
		rejected  atomic.Int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		ok = ok && accepted[tok]
		if ok {
			if _, seen := firstSeen[tok]; !seen {
				firstSeen[tok] = now
			}
		}
		mu.Unlock()
		if !ok {
			rejected.Add(1)
			http.Error(w, "unknown token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)

	first := secretValue(t)
	accepted[first] = true
	writeSecretFile(t, path, first)

	p := startSidekey(t, configYAML(nil,
		[]string{fileCred("tok", path)},
		[]route{{name: "rot", prefix: "/rot/", upstream: srv.URL, strip: true, inject: "{credential: tok, as: bearer}"}}))
	waitOK(t, p, "/rot/ready")

	tr := &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxConnsPerHost:     clients,
		MaxIdleConnsPerHost: clients,
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}

	stalls := watchStalls(t, 50*time.Millisecond)
	waits := watchCPUWait(t, p.PID)
	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		okCount   atomic.Int64
		failCount atomic.Int64
		failMu    sync.Mutex
		failures  []string
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.ProxyURL+"/rot/x", nil)
					resp, err := client.Do(req)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					body, err := io.ReadAll(resp.Body)
					if err != nil {
						return err
					}
					captureResponse(t, "GET /rot/x", resp, body)
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("status %d: %s", resp.StatusCode, maskSecrets(string(body)))
					}
					return nil
				}()
				if err == nil {
					okCount.Add(1)
					continue
				}
				failCount.Add(1)
				failMu.Lock()
				if len(failures) < 5 {
					failures = append(failures, err.Error())
				}
				failMu.Unlock()
			}
		}()
	}

	type rename struct {
		token string
		at    time.Time
	}
	var (
		renames      []rename
		slowestWrite time.Duration
	)
	ticker := time.NewTicker(every)
	for range rotations {
		<-ticker.C
		tok := secretValue(t)
		mu.Lock()
		accepted[tok] = true
		mu.Unlock()
		began := time.Now()
		if err := replaceFile(path, tok); err != nil {
			t.Errorf("rotating the file: %v", err)
			break
		}
		renamed := time.Now()
		slowestWrite = max(slowestWrite, renamed.Sub(began))
		renames = append(renames, rename{tok, renamed})
	}
	ticker.Stop()

	// Let the last token arrive, then stop the clients.
	if len(renames) > 0 {
		last := renames[len(renames)-1].token
		deadline := time.NewTimer(5 * time.Second)
		poll := time.NewTicker(10 * time.Millisecond)
	wait:
		for {
			mu.Lock()
			_, seen := firstSeen[last]
			mu.Unlock()
			if seen {
				break
			}
			select {
			case <-poll.C:
			case <-deadline.C:
				break wait
			}
		}
		deadline.Stop()
		poll.Stop()
	}
	close(stop)
	wg.Wait()

	t.Logf("%d requests succeeded, %d failed, %d rotations (slowest write+rename %v)",
		okCount.Load(), failCount.Load(), len(renames), slowestWrite.Round(time.Microsecond))
	if n := failCount.Load(); n > 0 {
		t.Errorf("%d requests failed during rotation (upstream rejected %d); first: %q", n, rejected.Load(), failures)
	}

	mu.Lock()
	defer mu.Unlock()
	var (
		lags                  []time.Duration
		late, unseen, excused []string
	)
	for i, r := range renames {
		seen, ok := firstSeen[r.token]
		lag := max(seen.Sub(r.at), 0)
		if ok && lag <= maxLag {
			lags = append(lags, lag)
			continue
		}
		// Past the bound. Not sidekey's doing when, inside the window,
		// this process did not run for 50 ms or more, or a sidekey thread
		// waited for a CPU long enough to account for the excess: then the
		// lag is the machine's.
		end := seen
		if !ok {
			end = r.at.Add(every) // the next token replaced it
		}
		stall, wait := stalls.within(r.at, end), waits.worst(r.at, end)
		if stall > 0 || (ok && lag-wait <= maxLag) || (!ok && wait >= every/2) {
			excused = append(excused, fmt.Sprintf("#%d (seen %v, this process stalled %v, a sidekey thread waited %v for a CPU)",
				i+1, ok, stall.Round(time.Millisecond), wait.Round(time.Millisecond)))
			continue
		}
		if !ok {
			unseen = append(unseen, fmt.Sprintf("#%d (a sidekey thread waited %v for a CPU)", i+1, wait.Round(time.Millisecond)))
			continue
		}
		lags = append(lags, lag)
		late = append(late, fmt.Sprintf("#%d after %v (a sidekey thread waited %v for a CPU)", i+1, lag.Round(time.Millisecond), wait.Round(time.Millisecond)))
	}
	if len(excused) > 0 {
		t.Logf("not counted, the machine did not run the processes while they were current: %s", strings.Join(excused, "; "))
	}
	if len(unseen) > 0 {
		t.Errorf("%d of %d tokens never reached the upstream (replaced before sidekey picked them up): %s",
			len(unseen), len(renames), strings.Join(unseen, ", "))
	}
	if len(late) > 0 {
		t.Errorf("%d of %d tokens reached the upstream more than %v after their rename: %s",
			len(late), len(renames), maxLag, strings.Join(late, ", "))
	}
	if len(unseen) > 0 || len(late) > 0 {
		var events []string
		for _, l := range p.Logs() {
			if !strings.Contains(l, `"msg":"request"`) && !strings.Contains(l, `"msg":"credential rotated"`) {
				events = append(events, l)
			}
		}
		t.Logf("sidekey log lines other than requests and rotations:\n%s", maskSecrets(strings.Join(events, "\n")))
	}
	if len(lags) > 0 {
		slices.Sort(lags)
		t.Logf("rotation lag over %d tokens: p50 %v, p99 %v, max %v", len(lags),
			lags[len(lags)/2].Round(time.Microsecond), lags[len(lags)*99/100].Round(time.Microsecond), lags[len(lags)-1].Round(time.Microsecond))
	}
}

// stallLog records the intervals in which this process did not run for
// at least a limit: a goroutine ticking every 5 ms notes each late tick.
type stallLog struct {
	mu     sync.Mutex
	stalls [][2]time.Time
}

func watchStalls(t testing.TB, limit time.Duration) *stallLog {
	s := &stallLog{}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				if now.Sub(last) >= limit {
					s.mu.Lock()
					s.stalls = append(s.stalls, [2]time.Time{last, now})
					s.mu.Unlock()
				}
				last = now
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
	return s
}

// within returns the longest stall overlapping [from, to], or 0.
func (s *stallLog) within(from, to time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var longest time.Duration
	for _, st := range s.stalls {
		if st[0].Before(to) && st[1].After(from) {
			longest = max(longest, st[1].Sub(st[0]))
		}
	}
	return longest
}

// cpuWaitLog samples every 10 ms how long each thread of a process has
// waited for a CPU (run_delay in /proc/PID/task/TID/schedstat), so that a
// late rotation can be told apart from a process the machine did not run.
// Without schedstat it records nothing and excuses nothing.
type cpuWaitLog struct {
	mu      sync.Mutex
	samples []cpuWaitSample
}

type cpuWaitSample struct {
	at    time.Time
	delay map[string]time.Duration // thread id -> cumulative run_delay
}

func watchCPUWait(t testing.TB, pid int) *cpuWaitLog {
	c := &cpuWaitLog{}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			d := readRunDelays(pid)
			if d == nil {
				continue
			}
			c.mu.Lock()
			c.samples = append(c.samples, cpuWaitSample{at: time.Now(), delay: d})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
	return c
}

func readRunDelays(pid int) map[string]time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := make(map[string]time.Duration, len(entries))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		if ns, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			out[e.Name()] = time.Duration(ns)
		}
	}
	return out
}

// worst returns the longest time one thread spent waiting for a CPU
// between the samples around [from, to].
func (c *cpuWaitLog) worst(from, to time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.samples) == 0 {
		return 0
	}
	i0 := 0
	for i, s := range c.samples {
		if s.at.After(from) {
			break
		}
		i0 = i
	}
	i1 := len(c.samples) - 1
	for i := i0; i < len(c.samples); i++ {
		if !c.samples[i].at.Before(to) {
			i1 = i
			break
		}
	}
	var worst time.Duration
	for tid, d := range c.samples[i1].delay {
		worst = max(worst, d-c.samples[i0].delay[tid])
	}
	return worst
}
