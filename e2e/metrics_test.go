package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// TestMetrics reads /metrics with the Prometheus text parser and checks
// that every metric of the SPEC exists with its type and labels, and moves
// with what the proxy does: requests by route and code (route="none"
// without a route), both duration histograms, rotations by result from
// start-up, the first fetch counted, a failing source counted, expiry and
// age gauges, and the in-flight gauge while a request is held open.
func TestMetrics(t *testing.T) {
	t.Parallel()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	filePath := filepath.Join(dir, "file-token")
	writeSecretFile(t, filePath, secretValue(t))
	execJSON := filepath.Join(dir, "exec.json")
	execTok := func() string {
		expires := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		return fmt.Sprintf(`{"token": %q, "expires_at": %q}`, secretValue(t), expires)
	}
	writeTestFile(t, execJSON, execTok())

	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
		}
		io.WriteString(w, "ok")
	})
	p := startSidekey(t, configYAML(nil,
		[]string{
			fileCred("filetok", filePath),
			execCred("exectok", []string{cat, execJSON}, "refresh: 1h"),
			// Never fetched: its file does not exist.
			fileCred("missing", filepath.Join(dir, "absent")),
		},
		[]route{
			{name: "m", prefix: "/m/", upstream: up.URL, strip: true, inject: "{credential: filetok, as: bearer}", timeout: "60s"},
			{name: "e", prefix: "/e/", upstream: up.URL, strip: true, inject: "{credential: exectok, as: bearer}"},
		}))
	const (
		requests   = "sidekey_requests_total"
		duration   = "sidekey_request_duration_seconds"
		upstreamD  = "sidekey_upstream_duration_seconds"
		rotations  = "sidekey_credential_rotations_total"
		expiry     = "sidekey_credential_expiry_seconds"
		age        = "sidekey_credential_age_seconds"
		inflight   = "sidekey_inflight_requests"
		certExpiry = "sidekey_certificate_expiry_seconds"
	)

	// From start-up, before anything was proxied, every credential has its
	// series: rotations by result (failure at 0 for those that load), expiry
	// and age.
	m := scrape(t, p)
	for _, c := range []string{"filetok", "exectok", "missing"} {
		for _, result := range []string{"success", "failure"} {
			v, ok := m.value(rotations, "credential", c, "result", result)
			if !ok || (result == "failure" && c != "missing" && v != 0) {
				t.Errorf("%s{credential=%q,result=%q} = %v (present %v) at start-up, want 0", rotations, c, result, v, ok)
			}
		}
		for _, g := range []string{expiry, age} {
			if _, ok := m.value(g, "credential", c); !ok {
				t.Errorf("%s{credential=%q} missing at start-up", g, c)
			}
		}
	}
	waitOK(t, p, "/m/ready")
	waitOK(t, p, "/e/ready")

	t.Run("types", func(t *testing.T) {
		m := scrape(t, p)
		m.wantType(t, requests, dto.MetricType_COUNTER)
		m.wantType(t, rotations, dto.MetricType_COUNTER)
		m.wantType(t, duration, dto.MetricType_HISTOGRAM)
		m.wantType(t, upstreamD, dto.MetricType_HISTOGRAM)
		m.wantType(t, expiry, dto.MetricType_GAUGE)
		m.wantType(t, age, dto.MetricType_GAUGE)
		m.wantType(t, inflight, dto.MetricType_GAUGE)
		// Certificates are refused by this build's configuration, so the
		// family may be absent; when it is there its series must be gauges
		// labelled by certificate.
		if f := m[certExpiry]; f != nil {
			m.wantType(t, certExpiry, dto.MetricType_GAUGE)
			for _, s := range f.GetMetric() {
				if !hasLabelName(s, "certificate") {
					t.Errorf("%s series without a certificate label: %v", certExpiry, s)
				}
			}
		}
	})

	t.Run("never fetched", func(t *testing.T) {
		m := scrape(t, p)
		if v := m.must(t, rotations, "credential", "missing", "result", "success"); v != 0 {
			t.Errorf("%s{credential=\"missing\",result=\"success\"} = %v, want 0", rotations, v)
		}
		eventually(t, 5*time.Second, "the failed fetches are counted", func() error {
			if v := scrape(t, p).must(t, rotations, "credential", "missing", "result", "failure"); v < 1 {
				return fmt.Errorf("failure = %v", v)
			}
			return nil
		})
		for _, g := range []string{expiry, age} {
			if v := m.must(t, g, "credential", "missing"); v != 0 {
				t.Errorf("%s{credential=\"missing\"} = %v without a value, want 0", g, v)
			}
		}
	})

	t.Run("first fetch is a success", func(t *testing.T) {
		m := scrape(t, p)
		for _, c := range []string{"filetok", "exectok"} {
			if v := m.must(t, rotations, "credential", c, "result", "success"); v != 1 {
				t.Errorf("%s{credential=%q,result=\"success\"} = %v after the first fetch, want 1", rotations, c, v)
			}
			if v := m.must(t, rotations, "credential", c, "result", "failure"); v != 0 {
				t.Errorf("%s{credential=%q,result=\"failure\"} = %v, want 0", rotations, c, v)
			}
		}
	})

	t.Run("requests and durations", func(t *testing.T) {
		before := scrape(t, p)
		const routed, unrouted = 5, 3
		for range routed {
			if resp, body := p.get(t, "/m/x"); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /m/x = %d: %s", resp.StatusCode, maskSecrets(string(body)))
			}
		}
		for range unrouted {
			if resp, _ := p.get(t, "/nowhere/x"); resp.StatusCode != http.StatusNotFound {
				t.Fatalf("GET /nowhere/x = %d, want 404", resp.StatusCode)
			}
		}
		delta := func(after metrics, name string, labels ...string) float64 {
			b, _ := before.value(name, labels...)
			a, _ := after.value(name, labels...)
			return a - b
		}
		eventually(t, 5*time.Second, "request metrics count the requests", func() error {
			after := scrape(t, p)
			checks := []struct {
				name   string
				labels []string
				min    float64
				exact  bool
			}{
				{requests, []string{"route", "m", "code", "200"}, routed, true},
				{requests, []string{"route", "none", "code", "404"}, unrouted, true},
				{duration, []string{"route", "m"}, routed, false},
				{duration, []string{"route", "none"}, unrouted, false},
				{upstreamD, []string{"route", "m"}, routed, false},
			}
			for _, c := range checks {
				d := delta(after, c.name, c.labels...)
				if d < c.min || (c.exact && d != c.min) {
					return fmt.Errorf("%s%v moved by %v, want %v", c.name, c.labels, d, c.min)
				}
			}
			return nil
		})
	})

	t.Run("expiry and age", func(t *testing.T) {
		m1 := scrape(t, p)
		if v := m1.must(t, expiry, "credential", "filetok"); !math.IsInf(v, 1) {
			t.Errorf("%s for a file credential = %v, want +Inf (never expires)", expiry, v)
		}
		e1 := m1.must(t, expiry, "credential", "exectok")
		if math.IsInf(e1, 0) || math.IsNaN(e1) || e1 <= 0 || e1 > 3600 {
			t.Errorf("%s for an exec credential expiring in 1h = %v, want in (0, 3600]", expiry, e1)
		}
		a1 := m1.must(t, age, "credential", "exectok")
		if a1 < 0 || a1 > 3600 {
			t.Errorf("%s for the exec credential = %v, want a few seconds", age, a1)
		}
		if v := m1.must(t, age, "credential", "filetok"); v < 0 {
			t.Errorf("%s for the file credential = %v, want >= 0", age, v)
		}
		eventually(t, 5*time.Second, "expiry decreases and age grows", func() error {
			m2 := scrape(t, p)
			e2 := m2.must(t, expiry, "credential", "exectok")
			a2 := m2.must(t, age, "credential", "exectok")
			if !(e2 < e1) || !(a2 > a1) {
				return fmt.Errorf("expiry %v -> %v, age %v -> %v", e1, e2, a1, a2)
			}
			return nil
		})
	})

	t.Run("inflight", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{Proxy: nil}}
		defer client.CloseIdleConnections()
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.ProxyURL+"/m/slow", nil)
			resp, err := client.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			done <- err
		}()
		select {
		case <-arrived:
		case <-time.After(15 * time.Second):
			t.Fatal("the slow request never reached the upstream")
		}
		if v := scrape(t, p).must(t, inflight); v < 1 {
			t.Errorf("%s = %v while a request is held open, want >= 1", inflight, v)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("the held request: %v", err)
		}
		eventually(t, 5*time.Second, inflight+" back to 0", func() error {
			if v := scrape(t, p).must(t, inflight); v != 0 {
				return fmt.Errorf("%s = %v", inflight, v)
			}
			return nil
		})
	})

	t.Run("rotations", func(t *testing.T) {
		before := scrape(t, p)
		succ := before.must(t, rotations, "credential", "exectok", "result", "success")
		fail := before.must(t, rotations, "credential", "exectok", "result", "failure")

		// The command fails: a failure, and the value is kept.
		if err := os.Remove(execJSON); err != nil {
			t.Fatal(err)
		}
		if code, body := p.admin(t, http.MethodPost, "/v1/credentials/exectok/rotate", ""); code == http.StatusOK {
			t.Fatalf("rotate with a failing command = 200, want an error: %s", maskSecrets(string(body)))
		}
		eventually(t, 5*time.Second, "the failed refresh is counted", func() error {
			m := scrape(t, p)
			if v := m.must(t, rotations, "credential", "exectok", "result", "failure"); v != fail+1 {
				return fmt.Errorf("failure = %v, want %v", v, fail+1)
			}
			if v := m.must(t, rotations, "credential", "exectok", "result", "success"); v != succ {
				return fmt.Errorf("success = %v, want %v", v, succ)
			}
			return nil
		})
		if resp, _ := p.get(t, "/e/x"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /e/x after a failed refresh = %d, want 200 (the value is still valid)", resp.StatusCode)
		}

		// A new value: a success.
		writeTestFile(t, execJSON, execTok())
		if code, body := p.admin(t, http.MethodPost, "/v1/credentials/exectok/rotate", ""); code != http.StatusOK {
			t.Fatalf("rotate = %d: %s", code, maskSecrets(string(body)))
		}
		eventually(t, 5*time.Second, "the new value is counted", func() error {
			m := scrape(t, p)
			if v := m.must(t, rotations, "credential", "exectok", "result", "success"); v != succ+1 {
				return fmt.Errorf("success = %v, want %v", v, succ+1)
			}
			return nil
		})
	})
}

func hasLabelName(s *dto.Metric, name string) bool {
	for _, lp := range s.GetLabel() {
		if lp.GetName() == name {
			return true
		}
	}
	return false
}
