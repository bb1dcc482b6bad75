package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
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
	// thousand lines; the load goes on until lines are dropped.
	load := startLoad(t, p.ProxyURL, 16, []string{"/x"})
	halt := sync.OnceFunc(load.halt)
	t.Cleanup(halt) // runs before the gate is released
	var v float64
	eventually(t, time.Minute, "audit lines dropped with the log output stalled", func() error {
		if v = scrape(t, p).must(t, dropped); v == 0 {
			return fmt.Errorf("%s = 0 after %d requests", dropped, load.ok.Load()+load.fail.Load())
		}
		return nil
	})
	halt()
	sent := load.ok.Load() + load.fail.Load()
	if n := load.fail.Load(); n > 0 {
		t.Errorf("%d of %d requests failed with the log output stalled; first: %q", n, sent, load.failures)
	}
	if v >= float64(sent) {
		t.Errorf("%s = %v after %d requests, want fewer: the batch holds lines too", dropped, v, sent)
	}
	t.Logf("%d requests answered, %v audit lines dropped", sent, v)
}
