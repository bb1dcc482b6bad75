package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
)

// A log reader that stops reading costs audit lines, never requests: while
// standard error is not read, every request is still answered, and the
// lines that no longer fit the sink's batch are counted in
// sidekey_audit_lines_dropped_total.
func TestStalledLogOutputDropsAuditLinesNotRequests(t *testing.T) {
	t.Parallel()
	const dropped = "sidekey_audit_lines_dropped_total"
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tok := filepath.Join(dataDir(t), "token")
	writeSecretFile(t, tok, secretValue(t))
	g := newGate()
	p := startSidekey(t, configYAML(nil, []string{fileCred("tok", tok)},
		[]route{{name: "r", prefix: "/", upstream: up.URL, inject: "{credential: tok, as: bearer}"}}),
		withStderrGate(g))
	t.Cleanup(func() { close(g.release) }) // runs before the process is stopped
	waitOK(t, p, "/ready")
	if v := scrape(t, p).must(t, dropped); v != 0 {
		t.Fatalf("%s = %v before the output stalled, want 0", dropped, v)
	}

	close(g.stall)
	// The pipe, the batch being written and the one filling hold a few
	// thousand lines; rounds of requests go on until lines are dropped.
	const workers, perWorker, maxRounds = 16, 64, 40
	sent := 0
	for round := 0; round < maxRounds; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perWorker; i++ {
					resp, err := p.Client.Get(p.ProxyURL + "/x")
					if err != nil {
						errs <- err
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs <- fmt.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d, with the log output stalled: %v", round, err)
		}
		sent += workers * perWorker
		if v := scrape(t, p).must(t, dropped); v > 0 {
			if v >= float64(sent) {
				t.Errorf("%s = %v after %d requests, want fewer: the batch holds lines too", dropped, v, sent)
			}
			t.Logf("%d requests answered, %v audit lines dropped", sent, v)
			return
		}
	}
	t.Fatalf("%s still 0 after %d requests with the log output stalled", dropped, sent)
}
