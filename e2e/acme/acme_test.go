package acme

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIssuance: sidekey starts unready with no certificate, obtains one
// from Pebble with one ACME order (tls-alpn-01 validated against its own
// TLS listener), serves it, and reports it on /readyz, /v1/certificates
// and /metrics.
func TestIssuance(t *testing.T) {
	const validity = 3600
	data := t.TempDir()
	upURL, upCount := newUpstream(t)
	p := newPebble(t, data)
	sk := startSidekey(t, data, acmeConfig(p, upURL), tlsListeners)

	// Pebble holds every request until it is started: nothing can have
	// been issued yet.
	code, body := sk.admin(t, "/readyz")
	var rz readyz
	if err := json.Unmarshal(body, &rz); err != nil || code != http.StatusServiceUnavailable || rz.Ready ||
		!slices.ContainsFunc(rz.NotReady, func(n notReady) bool { return n.Certificate != "" }) {
		t.Fatalf("/readyz before issuance: %d %s (err %v), want 503 naming the certificate", code, body, err)
	}
	before := sk.inbound(t)
	if before.Name != domain || before.Serial != "" || !slices.Equal(before.Subjects, []string{domain}) {
		t.Fatalf("/v1/certificates before issuance: %+v", before)
	}
	if c, err := tls.Dial("tcp", sk.Addrs["tls"], &tls.Config{ServerName: domain, InsecureSkipVerify: true}); err == nil {
		c.Close()
		t.Fatal("a TLS handshake succeeded before any certificate was issued")
	}

	start := time.Now()
	p.start(t, port(t, sk.Addrs["tls"]), validity)
	sk.waitReady(t, 30*time.Second)
	t.Logf("certificate issued and ready in %v", time.Since(start).Round(time.Millisecond))

	served, closed, err := get(httpsClient(p.Roots, sk.Addrs["tls"], nil), "/hello")
	if err != nil || closed {
		t.Fatalf("HTTPS request through the proxy: %v (closed %v)", err, closed)
	}
	if upCount.Load() != 1 {
		t.Fatalf("upstream got %d requests, want 1", upCount.Load())
	}

	info := sk.inbound(t)
	if info.Name != domain || info.Serial != served || !slices.Equal(info.Subjects, []string{domain}) ||
		!strings.Contains(info.Issuer, "Pebble") {
		t.Fatalf("/v1/certificates = %+v, want %s's certificate with serial %s issued by Pebble", info, domain, served)
	}
	if life := info.NotAfter.Sub(info.NotBefore); life < validity*time.Second-2*time.Second || life > validity*time.Second {
		t.Fatalf("/v1/certificates: lifetime %v (%v to %v), want about %ds", life, info.NotBefore, info.NotAfter, validity)
	}
	if n := p.NewOrders(); n != 1 {
		t.Fatalf("Pebble got %d new orders, want 1", n)
	}

	code, body = sk.admin(t, "/readyz")
	rz = readyz{}
	if err := json.Unmarshal(body, &rz); err != nil || code != http.StatusOK || !rz.Ready {
		t.Fatalf("/readyz after issuance: %d %s", code, body)
	}

	code, body = sk.admin(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	left, ok := gauge(t, body, "sidekey_certificate_expiry_seconds", map[string]string{"certificate": domain})
	if !ok {
		t.Fatalf("/metrics has no sidekey_certificate_expiry_seconds{certificate=%q}:\n%s", domain, grepLines(body, "certificate"))
	}
	if want := time.Until(info.NotAfter).Seconds(); left <= 0 || left > validity || left < want-30 {
		t.Fatalf("sidekey_certificate_expiry_seconds = %v, want about %.0f", left, want)
	}

	if !slices.ContainsFunc(sk.logged("inbound certificate in service"), func(e map[string]any) bool {
		return e["serial"] == served
	}) {
		t.Fatalf("no %q log line with serial %s", "inbound certificate in service", served)
	}
}

// readyz is the body of GET /readyz.
type readyz struct {
	Ready    bool       `json:"ready"`
	NotReady []notReady `json:"not_ready"`
}

type notReady struct {
	Credential  string `json:"credential"`
	Certificate string `json:"certificate"`
	State       string `json:"state"`
	LastError   string `json:"last_error"`
}

func grepLines(b []byte, substr string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// renewValidity is the lifetime, in seconds, of the certificates Pebble
// issues in TestRenewalsUnderLoad.
const renewValidity = 12

// renewKnob is the tls.acme setting that makes sidekey check for
// certificates to renew every second (the default, certmagic's, is every
// 10 minutes: no certificate is ever renewed within a test).
const renewKnob = "renew_interval: 1s"

// loadWorkers is how many keep-alive client connections send requests
// during TestRenewalsUnderLoad.
const loadWorkers = 8

// TestRenewalsUnderLoad: Pebble issues 12-second certificates; sidekey
// renews them while clients send requests continuously on keep-alive
// connections. Across at least three renewals no request fails, new
// connections get each new certificate, connections made with an old one
// are closed between requests (Connection: close on their next response)
// and every client ends up on the newest certificate.
func TestRenewalsUnderLoad(t *testing.T) {
	data := t.TempDir()
	upURL, _ := newUpstream(t)
	p := newPebble(t, data)
	sk := startSidekey(t, data, acmeConfig(p, upURL, renewKnob), tlsListeners)
	p.start(t, port(t, sk.Addrs["tls"]), renewValidity)
	sk.waitReady(t, 30*time.Second)

	workers := make([]*loadWorker, loadWorkers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		w := &loadWorker{id: i}
		w.client = httpsClient(p.Roots, sk.Addrs["tls"], w.connected)
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(stop)
		}()
	}
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopAll()

	// Count renewals from a certificate every client has been served on.
	deadline := time.Now().Add(10 * time.Second)
	for !allAnswered(workers) {
		if time.Now().After(deadline) {
			stopAll()
			t.Fatal("the clients got no answer within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Watch the admin API until three renewals have been served.
	issued := []certInfo{sk.inbound(t)}
	renewLimit := time.Duration(renewValidity)*time.Second + 8*time.Second
	for len(issued) < 4 {
		time.Sleep(100 * time.Millisecond)
		cur := sk.inbound(t)
		last := issued[len(issued)-1]
		if cur.Serial != last.Serial {
			issued = append(issued, cur)
			t.Logf("renewal %d: serial %s, valid %s to %s", len(issued)-1, cur.Serial,
				cur.NotBefore.Format(time.TimeOnly), cur.NotAfter.Format(time.TimeOnly))
			continue
		}
		if time.Since(last.NotBefore) > renewLimit {
			stopAll()
			t.Fatalf("renewal %d: no new certificate %v after the last one was issued (serial %s, expired %s; "+
				"%d new orders at Pebble): sidekey does not renew in time", len(issued), renewLimit, last.Serial,
				last.NotAfter.Format(time.TimeOnly), p.NewOrders())
		}
	}

	// Every client's connection moves to the newest certificate: the
	// next response on a connection made with an older one closes it.
	var newest string
	var behind []string // "client N on SERIAL", while some are
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		cur := sk.inbound(t)
		if newest = cur.Serial; !slices.Contains(issuedSerials(issued), newest) {
			issued = append(issued, cur)
		}
		behind = behind[:0]
		for _, w := range workers {
			if s, _ := w.current(); s != newest {
				behind = append(behind, fmt.Sprintf("client %d on %s", w.id, s))
			}
		}
		if len(behind) == 0 || time.Now().After(deadline) {
			break
		}
	}
	stopAll()

	var requests, conns, closes int
	seen := map[string]bool{}
	for _, w := range workers {
		w.mu.Lock()
		requests += w.requests
		conns += len(w.dialSerials)
		closes += w.closes
		for _, s := range w.dialSerials {
			seen[s] = true
		}
		for i, e := range w.errs {
			if i < 5 {
				t.Errorf("client %d: %s", w.id, e)
			}
		}
		if len(w.errs) > 0 {
			t.Errorf("client %d: %d of %d requests failed", w.id, len(w.errs), w.requests+len(w.errs))
		}
		if w.unannounced > 0 {
			t.Errorf("client %d: %d reconnections after a response without Connection: close (the connection was dropped, not retired between requests)",
				w.id, w.unannounced)
		}
		if w.closes < 3 {
			t.Errorf("client %d: %d responses with Connection: close across %d renewals, want at least 3", w.id, w.closes, len(issued)-1)
		}
		w.mu.Unlock()
	}
	t.Logf("%d requests on %d connections from %d clients, %d closed by Connection: close, across %d certificates",
		requests, conns, loadWorkers, closes, len(issued))
	if len(behind) > 0 {
		t.Errorf("clients did not all move to the newest certificate (%s) within 10s: %s", newest, strings.Join(behind, ", "))
	}
	var fromAdmin []string
	for s := range seen {
		if !slices.Contains(issuedSerials(issued), s) {
			fromAdmin = append(fromAdmin, s)
		}
	}
	if len(fromAdmin) > 0 {
		t.Errorf("connections got serials %v that /v1/certificates never showed (it showed %v)", fromAdmin, issuedSerials(issued))
	}
	if len(seen) < 4 {
		t.Errorf("new connections saw %d distinct certificates, want at least 4 (one per renewal and the first)", len(seen))
	}
	if requests < 2*conns {
		t.Errorf("%d requests on %d connections: the clients' connections were not kept alive", requests, conns)
	}
	code, body := sk.admin(t, "/readyz")
	if code != http.StatusOK {
		t.Errorf("/readyz after the renewals: %d %s", code, body)
	}
}

func issuedSerials(issued []certInfo) []string {
	out := make([]string, len(issued))
	for i, c := range issued {
		out[i] = c.Serial
	}
	return out
}

// loadWorker sends requests one after the other on one keep-alive
// connection (reconnecting when the proxy closes it) and records what it
// saw.
type loadWorker struct {
	id     int
	client *http.Client

	mu          sync.Mutex
	dialSerials []string // the certificate each new connection's handshake got
	requests    int      // answered 200 "ok"
	closes      int      // responses with Connection: close
	unannounced int      // new connections not preceded by Connection: close
	lastSerial  string   // the certificate of the connection of the last response
	lastClosed  bool
	errs        []string
}

// allAnswered reports whether every worker has had a response.
func allAnswered(workers []*loadWorker) bool {
	for _, w := range workers {
		if _, n := w.current(); n == 0 {
			return false
		}
	}
	return true
}

func (w *loadWorker) connected(serial string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dialSerials = append(w.dialSerials, serial)
}

// current returns the serial of the connection the last response came on
// and how many requests were answered.
func (w *loadWorker) current() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSerial, w.requests
}

func (w *loadWorker) run(stop <-chan struct{}) {
	defer w.client.CloseIdleConnections()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		w.mu.Lock()
		dials := len(w.dialSerials)
		w.mu.Unlock()
		serial, closed, err := get(w.client, fmt.Sprintf("/load/%d/%d", w.id, n))
		w.mu.Lock()
		if err != nil {
			w.errs = append(w.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			w.lastClosed = true // the failure is reported; do not count the reconnection too
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if len(w.dialSerials) != dials && w.requests > 0 && !w.lastClosed {
			w.unannounced++
		}
		w.requests++
		w.lastSerial, w.lastClosed = serial, closed
		if closed {
			w.closes++
		}
		w.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
}
