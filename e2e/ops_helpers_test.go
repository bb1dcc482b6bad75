package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ---- metrics ----

// metrics is one scrape of the admin API's /metrics, parsed by the
// Prometheus text parser.
type metrics map[string]*dto.MetricFamily

// scrape fetches and parses /metrics; a body the Prometheus parser refuses
// fails the test.
func scrape(t testing.TB, p *proc) metrics {
	t.Helper()
	code, body := p.admin(t, http.MethodGet, "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d: %s", code, maskSecrets(string(body)))
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	return metrics(fams)
}

// series returns the sample of family name whose labels include every
// pair of labels (name, value, name, value...).
func (m metrics) series(name string, labels ...string) (*dto.Metric, bool) {
	f := m[name]
	if f == nil {
		return nil, false
	}
	for _, s := range f.GetMetric() {
		if hasLabels(s, labels) {
			return s, true
		}
	}
	return nil, false
}

func hasLabels(s *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range s.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// value is a counter's or gauge's value, or a histogram's sample count;
// ok is false when the series does not exist.
func (m metrics) value(name string, labels ...string) (v float64, ok bool) {
	s, ok := m.series(name, labels...)
	if !ok {
		return 0, false
	}
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue(), true
	case s.Gauge != nil:
		return s.Gauge.GetValue(), true
	case s.Histogram != nil:
		return float64(s.Histogram.GetSampleCount()), true
	case s.Untyped != nil:
		return s.Untyped.GetValue(), true
	}
	return 0, false
}

// must is value that fails the test when the series is missing.
func (m metrics) must(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := m.value(name, labels...)
	if !ok {
		t.Fatalf("/metrics has no series %s%v", name, labels)
	}
	return v
}

// wantType checks the TYPE line of a family.
func (m metrics) wantType(t testing.TB, name string, want dto.MetricType) {
	t.Helper()
	f := m[name]
	if f == nil {
		t.Errorf("/metrics has no family %s", name)
		return
	}
	if f.GetType() != want {
		t.Errorf("%s is a %v, want a %v", name, f.GetType(), want)
	}
}

// ---- admin API ----

// credentialOf returns the /v1/credentials entry of name.
func credentialOf(t testing.TB, p *proc, name string) credStatus {
	t.Helper()
	code, body := p.admin(t, http.MethodGet, "/v1/credentials", "")
	if code != http.StatusOK {
		t.Fatalf("/v1/credentials = %d: %s", code, maskSecrets(string(body)))
	}
	var list []credStatus
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("/v1/credentials is not a JSON list: %v", err)
	}
	for _, e := range list {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("/v1/credentials has no entry for %s: %s", name, maskSecrets(string(body)))
	return credStatus{}
}

// readiness is the /readyz answer.
type readiness struct {
	Ready    bool       `json:"ready"`
	NotReady []notReady `json:"not_ready"`
	Degraded []notReady `json:"degraded"`
}

type notReady struct {
	Credential string `json:"credential"`
	State      string `json:"state"`
	LastError  string `json:"last_error"`
}

func readyz(t testing.TB, p *proc) (int, readiness) {
	t.Helper()
	code, body := p.admin(t, http.MethodGet, "/readyz", "")
	var r readiness
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/readyz (%d) is not JSON: %v: %q", code, err, maskSecrets(string(body)))
	}
	return code, r
}

// ---- logs and reload ----

// waitLogFrom is waitLog starting at log line from, so that a test can
// wait for what follows an action (a reload) and not an earlier line.
func (p *proc) waitLogFrom(from int, timeout time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next, exited := from, false
	for {
		lines, notify := p.stderr.Since(next)
		next += len(lines)
		for _, ln := range lines {
			var e map[string]any
			if json.Unmarshal([]byte(ln), &e) == nil && match(e) {
				return e, nil
			}
		}
		if exited {
			return nil, fmt.Errorf("sidekey exited (code %d) first", p.exitCode)
		}
		select {
		case <-notify:
		case <-p.exited:
			exited = true
		case <-timer.C:
			return nil, fmt.Errorf("no matching log line within %v", timeout)
		}
	}
}

// reloadWith writes yamlText over p's config file, sends SIGHUP and waits
// for the reload's outcome. It returns the log lines the reload wrote and
// whether it was applied ("configuration reloaded") or refused.
func reloadWith(t testing.TB, p *proc, yamlText string) (applied bool, lines []map[string]any) {
	t.Helper()
	from := len(p.Logs())
	writeTestFile(t, p.ConfigPath, yamlText)
	p.signal(syscall.SIGHUP)
	outcome := func(e map[string]any) bool {
		return e["msg"] == "configuration reloaded" || e["msg"] == "the running configuration keeps serving"
	}
	end, err := p.waitLogFrom(from, 15*time.Second, outcome)
	if err != nil {
		t.Fatalf("no reload outcome logged after SIGHUP: %v\nlog:\n%s", err, p.tail(40))
	}
	for _, ln := range p.Logs()[from:] {
		var e map[string]any
		if json.Unmarshal([]byte(ln), &e) != nil {
			continue
		}
		lines = append(lines, e)
		if outcome(e) {
			break
		}
	}
	return end["msg"] == "configuration reloaded", lines
}

// ---- networking ----

// freePort returns a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// refusesConnections reports nil once a dial to addr is refused.
func refusesConnections(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		return err
	}
	c.Close()
	return fmt.Errorf("%s still accepts connections", addr)
}
