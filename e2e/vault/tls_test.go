package vaulte2e

import (
	"github.com/sidekey/sidekey/e2e/internal/linelog"

	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// The tests in this file run the built binary's certificates against the
// in-process Vault: an outbound client certificate issued by Vault's PKI
// and rotated under load, and the inbound ACME certificate of two replicas
// sharing their ACME storage in Vault KV, obtained from a real ACME CA
// (Pebble, in-process, validating tls-alpn-01 against a replica's port).

// TestBinaryClientCertRotatesUnderLoad: a route presents a client
// certificate from Vault PKI (ttl 5s) to an upstream that requires one
// signed by Vault's CA. While clients keep sending requests the
// certificate is renewed several times, the upstream sees each new one on
// new connections, and no request fails.
func TestBinaryClientCertRotatesUnderLoad(t *testing.T) {
	tv := startVault(t)
	sec, err := tv.root.Logical().Read("pki/cert/ca")
	if err != nil || sec == nil {
		t.Fatalf("reading Vault's PKI CA: %v", err)
	}
	vaultCA := x509.NewCertPool()
	if !vaultCA.AppendCertsFromPEM([]byte(fmt.Sprint(sec.Data["certificate"]))) {
		t.Fatal("Vault's PKI CA is not PEM")
	}

	var mu sync.Mutex
	serials := map[string]int{} // client certificate serial -> requests
	var order []string
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		s := hexSerial(r.TLS.PeerCertificates[0].SerialNumber)
		mu.Lock()
		if serials[s] == 0 {
			order = append(order, s)
		}
		serials[s]++
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	up.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: vaultCA}
	upLog := linelog.New()
	up.Config.ErrorLog = log.New(upLog, "", 0)
	up.StartTLS()
	t.Cleanup(up.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("upstream error log:\n%s", strings.Join(upLog.All(), "\n"))
		}
	})
	upCA := filepath.Join(t.TempDir(), "upstream-ca.pem")
	must(t, os.WriteFile(upCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o644))
	distinct := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), order...)
	}

	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
shutdown_timeout: 10s
admin:
  listen: 127.0.0.1:0
log:
  level: debug
  format: json
  requests: false
%scertificates:
  mtls:
    source: vault-pki
    path: pki/issue/sidekey
    common_name: payments.sidecar
    ttl: 5s
routes:
  - name: mtls
    match: {path_prefix: /mtls/}
    upstream: %s
    strip_prefix: true
    timeout: 10s
    upstream_tls:
      ca: %q
      client_cert: mtls
`, tokenYAML(t, tv.token(t)), up.URL, "file:"+upCA)
	p := startSidekey(t, yaml, vaultEnv(t, tv)...)
	waitOK(t, p, "/mtls/ready")

	tr := startTraffic(t, p, 4, "/mtls/load")
	start := time.Now()
	within(t, 40*time.Second, "the upstream to see four client certificates under load", func() bool {
		return len(distinct()) >= 4
	})
	tr.check(t)
	seen := distinct()
	t.Logf("%d requests; the upstream saw %d client certificates in %v", tr.ok.Load(), len(seen), time.Since(start).Round(time.Millisecond))

	code, body, err := p.do(http.MethodGet, p.AdminURL+"/v1/certificates")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/v1/certificates: %d %v", code, err)
	}
	var infos []tlsCertInfo
	must(t, json.Unmarshal(body, &infos))
	var client *tlsCertInfo
	for i := range infos {
		if infos[i].Name == "mtls" {
			client = &infos[i]
		}
	}
	if client == nil || client.Kind != "client" || client.Serial == "" || len(client.Subjects) == 0 || client.Subjects[0] != "payments.sidecar" {
		t.Fatalf("/v1/certificates has no client certificate mtls for payments.sidecar: %s", body)
	}
	if !strings.Contains(client.Issuer, "sidekey test root") {
		t.Errorf("/v1/certificates: mtls issuer %q, want Vault's CA", client.Issuer)
	}
	if code, body, _ := p.do(http.MethodGet, p.AdminURL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	p.stop(t)
	assertNothingWritten(t, p)
}

// tlsCertInfo is one entry of GET /v1/certificates.
type tlsCertInfo struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	Subjects  []string  `json:"subjects"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// acmeDomain is the name the replicas get a certificate for; the test DNS
// server resolves it (and everything else) to 127.0.0.1.
const acmeDomain = "sidekey.test"

// acmeKVPrefix is where the replicas keep their ACME state: KV v2 at kv/.
const acmeKVPrefix = "sidekey/acme"

// acmeStoragePolicy lets sidekey keep certmagic's storage below
// kv/data/sidekey/acme.
const acmeStoragePolicy = `
path "kv/data/sidekey/acme" { capabilities = ["create", "read", "update", "delete", "list"] }
path "kv/data/sidekey/acme/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "kv/metadata/sidekey/acme" { capabilities = ["read", "delete", "list"] }
path "kv/metadata/sidekey/acme/*" { capabilities = ["read", "delete", "list"] }
`

// TestBinarySharedACMEStorageOneOrder: two replicas with
// storage vault:kv/data/sidekey/acme against one ACME CA place exactly one
// order between them and serve the same certificate. Replica B starts
// first and takes the issuance lock; the CA validates tls-alpn-01 on
// replica A's port, which answers from the shared storage.
func TestBinarySharedACMEStorageOneOrder(t *testing.T) {
	tv := startVault(t)
	must(t, tv.root.Sys().PutPolicy("sidekey-acme", acmeStoragePolicy))
	tok, err := tv.root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"sidekey", "sidekey-acme"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	// Every private key stored for ACME must stay out of what the
	// replicas write and answer.
	beforeScan(t, func() { rememberACMEKeys(t, tv) })

	upstream := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	pb := newACMEPebble(t)
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
shutdown_timeout: 10s
admin:
  listen: 127.0.0.1:0
log:
  level: debug
  format: json
  requests: false
%sroutes:
  - name: app
    match: {path_prefix: /}
    upstream: %s
    timeout: 10s
tls:
  listen: 127.0.0.1:0
  acme:
    domains: [%s]
    email: ops@%s
    directory: %s
    challenge: tls-alpn-01
    ca_roots: %q
    storage: vault:kv/data/%s
`, tokenYAML(t, tok.Auth.ClientToken), upstream.URL, acmeDomain, acmeDomain, pb.directory, "file:"+pb.apiCAFile, acmeKVPrefix)
	env := vaultEnv(t, tv)

	b := startSidekey(t, yaml, env...)
	bTLS := listenerAddr(t, b, "tls")
	if _, err := b.waitLog(waitLimit, func(e map[string]any) bool {
		return e["msg"] == "lock acquired" && e["identifier"] == acmeDomain
	}); err != nil {
		t.Fatalf("replica B did not take the issuance lock: %v\n%s", err, b.tail(40))
	}
	a := startSidekey(t, yaml, env...)
	aTLS := listenerAddr(t, a, "tls")
	for _, p := range []*sidekeyProc{a, b} {
		if code, body, _ := p.do(http.MethodGet, p.AdminURL+"/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz of pid %d before the CA answers: %d %s, want 503", p.PID, code, body)
		}
	}

	pb.start(t, portOf(t, aTLS), 3600)
	for _, p := range []*sidekeyProc{b, a} {
		within(t, 30*time.Second, fmt.Sprintf("pid %d to be ready", p.PID), func() bool {
			code, _, _ := p.do(http.MethodGet, p.AdminURL+"/readyz")
			return code == http.StatusOK
		})
	}

	serialA, serialB := inboundSerial(t, a), inboundSerial(t, b)
	if serialA == "" || serialA != serialB {
		t.Fatalf("the replicas hold different certificates: A %q, B %q", serialA, serialB)
	}
	for name, addr := range map[string]string{"A": aTLS, "B": bTLS} {
		if got := servedSerial(t, pb.roots, addr); got != serialA {
			t.Errorf("replica %s's TLS listener serves serial %s, want %s", name, got, serialA)
		}
	}
	if n := pb.newOrders.Load(); n != 1 {
		t.Errorf("the CA got %d new orders, want exactly 1", n)
	}
	obtained := func(p *sidekeyProc) int { return p.countLog("certificate obtained successfully") }
	if oa, ob := obtained(a), obtained(b); ob != 1 || oa != 0 {
		t.Errorf("certificates obtained: replica A %d, replica B %d; want B alone to obtain it", oa, ob)
	}
	for _, p := range []*sidekeyProc{a, b} {
		p.stop(t)
		assertNothingWritten(t, p)
	}
}

func listenerAddr(t *testing.T, p *sidekeyProc, listener string) string {
	t.Helper()
	e, err := p.waitLog(waitLimit, func(e map[string]any) bool {
		return e["msg"] == "listening" && e["listener"] == listener
	})
	if err != nil {
		t.Fatalf("sidekey pid %d logged no %s listening line: %v", p.PID, listener, err)
	}
	return fmt.Sprint(e["addr"])
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// inboundSerial is the serial of the inbound certificate in /v1/certificates.
func inboundSerial(t *testing.T, p *sidekeyProc) string {
	t.Helper()
	code, body, err := p.do(http.MethodGet, p.AdminURL+"/v1/certificates")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/v1/certificates: %d %v", code, err)
	}
	var infos []tlsCertInfo
	must(t, json.Unmarshal(body, &infos))
	for _, c := range infos {
		if c.Kind == "inbound" && c.Name == acmeDomain {
			return c.Serial
		}
	}
	t.Fatalf("/v1/certificates of pid %d has no inbound certificate: %s", p.PID, body)
	return ""
}

// servedSerial makes a TLS handshake with addr and returns the serial of
// the certificate it got, verified against roots.
func servedSerial(t *testing.T, roots *x509.CertPool, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: acmeDomain, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return hexSerial(c.ConnectionState().PeerCertificates[0].SerialNumber)
}

// hexSerial renders a serial number as the admin API does: lower-case hex
// bytes separated by colons.
func hexSerial(n *big.Int) string {
	b := n.Bytes()
	if len(b) == 0 {
		b = []byte{0}
	}
	h := hex.EncodeToString(b)
	parts := make([]string, 0, len(h)/2)
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// assertNothingWritten fails the test when the stopped process left
// anything in its working directory, HOME or TMPDIR.
func assertNothingWritten(t *testing.T, p *sidekeyProc) {
	t.Helper()
	for _, sub := range []string{"work", "home", "tmp"} {
		dir := filepath.Join(p.Dir, sub)
		_ = filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
			if err == nil && path != dir {
				t.Errorf("sidekey pid %d wrote %s", p.PID, path)
			}
			return nil
		})
	}
}

// rememberACMEKeys registers every line of every private key stored
// below the ACME prefix as a secret.
func rememberACMEKeys(t *testing.T, tv *testVault) {
	var walk func(prefix string)
	walk = func(prefix string) {
		sec, err := tv.root.Logical().List("kv/metadata/" + prefix)
		if err != nil || sec == nil {
			return
		}
		keys, _ := sec.Data["keys"].([]any)
		for _, k := range keys {
			name := prefix + "/" + strings.TrimSuffix(fmt.Sprint(k), "/")
			if strings.HasSuffix(fmt.Sprint(k), "/") {
				walk(name)
				continue
			}
			entry, err := tv.root.Logical().Read("kv/data/" + name)
			if err != nil || entry == nil {
				continue
			}
			data, _ := entry.Data["data"].(map[string]any)
			raw, err := base64.StdEncoding.DecodeString(fmt.Sprint(data["value"]))
			if err != nil || !strings.Contains(string(raw), "PRIVATE KEY") {
				continue
			}
			for _, line := range strings.Split(string(raw), "\n") {
				if !strings.HasPrefix(line, "-----") {
					rememberSecret(t, "an ACME private key stored at kv/data/"+name, line)
				}
			}
		}
	}
	walk(acmeKVPrefix)
}

// ---- a real ACME CA ----

// acmePebble is Pebble, Let's Encrypt's test CA, in the test process. Its
// HTTPS endpoints are bound at once, so that their addresses can go into
// a sidekey config, but the CA is built by start, once the port its
// validation authority checks tls-alpn-01 on is known: until then every
// request to it waits.
type acmePebble struct {
	directory string         // the ACME directory URL
	apiCAFile string         // the certificate of Pebble's HTTPS API, for tls.acme.ca_roots
	roots     *x509.CertPool // Pebble's issuing root, once started

	acme, mgmt  *httptest.Server
	acmeH, mgmH atomic.Pointer[http.Handler]
	started     chan struct{}
	logs        *linelog.Log
	newOrders   atomic.Int64
}

func newACMEPebble(t *testing.T) *acmePebble {
	t.Helper()
	p := &acmePebble{started: make(chan struct{}), logs: linelog.New()}
	p.acme = httptest.NewUnstartedServer(p.waiting(&p.acmeH))
	p.acme.Config.ErrorLog = log.New(p.logs, "pebble acme http: ", 0)
	p.acme.StartTLS()
	t.Cleanup(p.acme.Close)
	p.mgmt = httptest.NewUnstartedServer(p.waiting(&p.mgmH))
	p.mgmt.Config.ErrorLog = log.New(p.logs, "pebble mgmt http: ", 0)
	p.mgmt.StartTLS()
	t.Cleanup(p.mgmt.Close)
	t.Cleanup(func() {
		if t.Failed() {
			lines := p.logs.All()
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("Pebble log tail:\n%s", strings.Join(lines, "\n"))
		}
	})
	p.directory = p.acme.URL + wfe.DirectoryPath
	p.apiCAFile = filepath.Join(t.TempDir(), "pebble-api-ca.pem")
	must(t, os.WriteFile(p.apiCAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.acme.Certificate().Raw}), 0o644))
	return p
}

// waiting serves with the handler h points to once started, counting new
// orders.
func (p *acmePebble) waiting(h *atomic.Pointer[http.Handler]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-p.started:
		case <-r.Context().Done():
			return
		case <-time.After(30 * time.Second):
			http.Error(w, "Pebble was not started", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			p.newOrders.Add(1)
		}
		(*h.Load()).ServeHTTP(w, r)
	})
}

// start builds the CA (certificates valid for validity seconds), with a
// validation authority that resolves every name to 127.0.0.1 and checks
// tls-alpn-01 on tlsPort there, lets the waiting requests through, and
// fetches the issuing root.
func (p *acmePebble) start(t *testing.T, tlsPort int, validity uint64) {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random sleep before validating
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately bad nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates afresh
	logger := log.New(p.logs, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "test certificates", ValidityPeriod: validity},
	})
	validator := va.New(logger, 0, tlsPort, false, startLoopbackDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	acmeH, mgmH := front.Handler(), front.ManagementHandler()
	p.acmeH.Store(&acmeH)
	p.mgmH.Store(&mgmH)
	close(p.started)

	resp, err := p.mgmt.Client().Get(p.mgmt.URL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatalf("fetching Pebble's root: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetching Pebble's root: %d %v", resp.StatusCode, err)
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(b) {
		t.Fatal("Pebble's root is not PEM")
	}
}

// startLoopbackDNS serves DNS over TCP on 127.0.0.1, answering every A
// question with 127.0.0.1, and returns its address.
func startLoopbackDNS(t *testing.T) string {
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
