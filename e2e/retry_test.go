package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestUpstream401RefreshesOnce rotates a credential at its issuer behind
// sidekey's back: the upstream starts refusing the old value. Concurrent
// requests must all succeed through one shared forced refresh and one
// retry each.
func TestUpstream401RefreshesOnce(t *testing.T) {
	t.Parallel()
	const clients = 8
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	oldTok, newTok := secretValue(t), secretValue(t)
	tokPath := filepath.Join(dir, "tok")
	runsPath := filepath.Join(dir, "runs") // one line per run of the command
	writeSecretFile(t, tokPath, oldTok)

	var valid atomic.Value
	valid.Store(oldTok)
	var refused atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+valid.Load().(string) {
			refused.Add(1)
			http.Error(w, "expired token", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("ok"))
	})
	p := startSidekey(t, configYAML(nil,
		[]string{execCred("tok", []string{sh, "-c", `echo run >> "$0"; cat "$1"`, runsPath, tokPath}, "refresh: 1h")},
		[]route{{name: "r", prefix: "/r/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}))
	waitOK(t, p, "/r/ready")

	runs := func() int {
		b, _ := os.ReadFile(runsPath)
		return strings.Count(string(b), "\n")
	}
	before := runs()
	writeSecretFile(t, tokPath, newTok)
	valid.Store(newTok)

	var wg sync.WaitGroup
	statuses := make([]int, clients)
	start := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			<-start
			resp, _, err := p.send(t, http.MethodGet, p.ProxyURL+"/r/x", nil)
			if err == nil {
				statuses[i] = resp.StatusCode
			}
		})
	}
	close(start)
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("request %d: status %d, want 200 after a forced refresh and retry", i, s)
		}
	}
	if n := runs() - before; n != 1 {
		t.Errorf("the credential command ran %d times for %d concurrent 401s, want 1 shared refresh", n, refused.Load())
	}
	if n := refused.Load(); n < 1 || n > clients {
		t.Errorf("upstream refused %d requests, want between 1 and %d (one try with the old value each at most)", n, clients)
	}
}
