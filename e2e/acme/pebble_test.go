package acme

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/sidekey/sidekey/e2e/internal/linelog"
	"github.com/sidekey/sidekey/internal/pebblefix"
)

// pebble is a real ACME CA (Let's Encrypt's Pebble) running in the test
// process. Its HTTPS endpoints are bound at once, so that their addresses
// can go into a sidekey config, but the CA itself is built by start, once
// the port its validation authority must check tls-alpn-01 on (sidekey's
// TLS listener) is known: until then every request to it waits.
type pebble struct {
	Directory string // the ACME directory URL
	// APICAFile is the PEM file of the certificate of Pebble's own HTTPS
	// API, for tls.acme.ca_roots.
	APICAFile string
	// Roots holds Pebble's issuing root (from its management interface)
	// once start has returned.
	Roots *x509.CertPool

	acme, mgmt *httptest.Server
	handler    atomic.Pointer[http.Handler] // the ACME handler, once started
	mgmtH      atomic.Pointer[http.Handler]
	started    chan struct{}
	startOnce  sync.Once
	logs       *linelog.Log
	newOrders  atomic.Int64
}

// pebbleWait bounds how long a request to Pebble waits for start.
const pebbleWait = 30 * time.Second

// newPebble binds Pebble's ACME and management endpoints on 127.0.0.1 and
// writes the certificate of its HTTPS API to dataDir.
func newPebble(t testing.TB, dataDir string) *pebble {
	t.Helper()
	p := &pebble{started: make(chan struct{}), logs: linelog.New()}
	p.acme = httptest.NewUnstartedServer(p.waiting(&p.handler))
	p.acme.Config.ErrorLog = log.New(p.logs, "pebble acme http: ", 0)
	p.acme.StartTLS()
	t.Cleanup(p.acme.Close)
	p.mgmt = httptest.NewUnstartedServer(p.waiting(&p.mgmtH))
	p.mgmt.Config.ErrorLog = log.New(p.logs, "pebble mgmt http: ", 0)
	p.mgmt.StartTLS()
	t.Cleanup(p.mgmt.Close)
	t.Cleanup(func() {
		if t.Failed() {
			lines := p.logs.All()
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("Pebble log tail:\n%s", bytes.Join(toBytes(lines), []byte("\n")))
		}
	})

	p.Directory = p.acme.URL + wfe.DirectoryPath
	p.APICAFile = filepath.Join(dataDir, "pebble-api-ca.pem")
	apiPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.acme.Certificate().Raw})
	if err := os.WriteFile(p.APICAFile, apiPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func toBytes(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// waiting serves with the handler h points to, waiting for start first.
// New orders are counted.
func (p *pebble) waiting(h *atomic.Pointer[http.Handler]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-p.started:
		case <-r.Context().Done():
			return
		case <-time.After(pebbleWait):
			http.Error(w, "Pebble was not started", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == pebblefix.NewOrderPath {
			p.newOrders.Add(1)
		}
		(*h.Load()).ServeHTTP(w, r)
	})
}

// NewOrders counts the ACME new-order requests Pebble received.
func (p *pebble) NewOrders() int64 { return p.newOrders.Load() }

// start builds the CA, issuing certificates valid for validity seconds,
// with a validation authority that resolves every name to 127.0.0.1 and
// validates tls-alpn-01 on tlsPort there, and lets the waiting requests
// through. It fetches the issuing root into Roots.
func (p *pebble) start(t testing.TB, tlsPort int, validity uint64) {
	t.Helper()
	p.startOnce.Do(func() {
		// Pebble reads these when it is built.
		t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random sleep before validating
		t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately bad nonces
		t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates afresh
		logger := log.New(p.logs, "pebble ", log.Lmicroseconds)
		store := db.NewMemoryStore()
		authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
			"default": {Description: "short-lived test certificates", ValidityPeriod: validity},
		})
		validator := va.New(logger, 0, tlsPort, false, startDNS(t), store)
		front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
		acmeH, mgmtH := pebblefix.Orders(front.Handler()), front.ManagementHandler()
		p.handler.Store(&acmeH)
		p.mgmtH.Store(&mgmtH)
		close(p.started)
	})
	p.Roots = x509.NewCertPool()
	if !p.Roots.AppendCertsFromPEM(p.mgmtGet(t, wfe.RootCertPath+"0")) {
		t.Fatal("Pebble's root is not PEM")
	}
}

// mgmtGet reads a path of Pebble's management interface.
func (p *pebble) mgmtGet(t testing.TB, path string) []byte {
	t.Helper()
	resp, err := p.mgmt.Client().Get(p.mgmt.URL + path)
	if err != nil {
		t.Fatalf("Pebble management %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("Pebble management %s: %d %v", path, resp.StatusCode, err)
	}
	return b
}

// startDNS serves DNS over TCP on 127.0.0.1, answering every A question
// with 127.0.0.1 and every other question with no records. It returns the
// address.
func startDNS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}
