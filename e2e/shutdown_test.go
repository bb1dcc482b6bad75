package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMDrain holds a request in flight at the upstream, sends
// SIGTERM, and checks that new connections are refused, the held request
// still completes with 200 once released, and the process exits 0.
func TestSIGTERMDrain(t *testing.T) {
	dir := dataDir(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "ok")
			return
		}
		arrived <- struct{}{}
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		io.WriteString(w, "done")
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	p := startSidekey(t, configYAML([]string{"shutdown_timeout: 15s"},
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "d", prefix: "/d/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}", timeout: "60s"}}))
	waitOK(t, p, "/d/ready")
	p.Client.CloseIdleConnections()

	type outcome struct {
		status int
		body   string
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{Proxy: nil}}
		defer client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.ProxyURL+"/d/slow", nil)
		resp, err := client.Do(req)
		if err != nil {
			done <- outcome{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- outcome{status: resp.StatusCode, body: string(b), err: err}
	}()

	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("the slow request never reached the upstream")
	}
	p.asserted.Store(true)
	p.signal(syscall.SIGTERM)

	eventually(t, 10*time.Second, "new connections are refused after SIGTERM", func() error {
		c, err := net.DialTimeout("tcp", p.ProxyAddr, time.Second)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return nil
			}
			return err
		}
		c.Close()
		return errors.New("a new connection was accepted")
	})

	select {
	case o := <-done:
		t.Fatalf("the in-flight request ended before the upstream answered: status %d, %v", o.status, o.err)
	default:
	}
	close(release)

	select {
	case o := <-done:
		if o.err != nil || o.status != http.StatusOK || o.body != "done" {
			t.Errorf("in-flight request: status %d, body %q, err %v; want 200 done", o.status, o.body, o.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the in-flight request did not complete after the upstream answered")
	}
	code, ok := p.wait(20 * time.Second)
	if !ok {
		t.Fatal("sidekey did not exit within 20s of the drain")
	}
	if code != 0 {
		t.Errorf("sidekey exited %d after SIGTERM, want 0", code)
	}
}
