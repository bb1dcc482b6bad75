package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/sidekey/sidekey/internal/pebblefix"
)

// pebble is a real ACME CA (Let's Encrypt's Pebble) running in the test
// process: its validation authority resolves every name to 127.0.0.1 and
// validates challenges for real against the given ports there.
type pebble struct {
	directory string // ACME directory URL
	tlsPEM    string // the CA certificate of the ACME server's own TLS
	roots     *x509.CertPool
}

// startPebble runs Pebble issuing certificates valid for validity seconds
// (0: Pebble's default), validating tls-alpn-01 on tlsPort and http-01 on
// httpPort of 127.0.0.1.
func startPebble(t *testing.T, tlsPort, httpPort int, validity uint64) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random sleep before validating
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately bad nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates afresh
	logger := log.New(newTestWriter(t), "pebble ", 0)

	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "short-lived test certificates", ValidityPeriod: validity},
	})
	validator := va.New(logger, httpPort, tlsPort, false, startDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	acmeSrv := httptest.NewUnstartedServer(pebblefix.Orders(front.Handler()))
	acmeSrv.Config.ErrorLog = logger
	acmeSrv.StartTLS()
	t.Cleanup(acmeSrv.Close)
	mgmt := httptest.NewUnstartedServer(front.ManagementHandler())
	mgmt.Config.ErrorLog = logger
	mgmt.StartTLS()
	t.Cleanup(mgmt.Close)

	p := &pebble{
		directory: acmeSrv.URL + wfe.DirectoryPath,
		tlsPEM:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: acmeSrv.Certificate().Raw})),
	}
	p.roots = fetchRoot(t, mgmt)
	return p
}

// fetchRoot reads Pebble's issuing root from its management interface.
func fetchRoot(t *testing.T, mgmt *httptest.Server) *x509.CertPool {
	t.Helper()
	resp, err := mgmt.Client().Get(mgmt.URL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatalf("fetching Pebble's root: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetching Pebble's root: %d %v", resp.StatusCode, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("Pebble's root is not PEM: %q", b)
	}
	return pool
}

// startDNS serves DNS over TCP on 127.0.0.1, answering every A question
// with 127.0.0.1 and every other question with no records. It returns the
// address.
func startDNS(t *testing.T) string {
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

// tlsClient returns an HTTP client that trusts roots, sends serverName as
// SNI, dials addr whatever the URL says, and keeps at most one connection
// alive.
func tlsClient(roots *x509.CertPool, serverName, addr string) *http.Client {
	conf := &tls.Config{RootCAs: roots, ServerName: serverName}
	d := &net.Dialer{}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: conf,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		ForceAttemptHTTP2:   false,
	}}
}
