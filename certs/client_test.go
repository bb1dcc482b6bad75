package certs

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/sidekey/sidekey/config"
)

// runClient runs cc until the test ends.
func runClient(t *testing.T, cc *ClientCert) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- cc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// writeAtomic replaces path's content by a rename, as a secret volume or
// a careful tool does.
func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// mtlsServer is a TLS server that requires a client certificate from ca
// and answers with the serial of the one it got.
func mtlsServer(t *testing.T, ca *testCA) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, formatSerial(r.TLS.PeerCertificates[0].SerialNumber))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func mtlsGet(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

func TestClientCertFileRotation(t *testing.T) {
	ca := newTestCA(t, "sidekey test client CA")
	now := time.Now()
	cert1, key1, leaf1 := ca.issue(t, "payments.sidecar", true, now.Add(-time.Hour), now.Add(time.Hour))
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeAtomic(t, certFile, cert1)
	writeAtomic(t, keyFile, key1)

	secrets := &recordingSecrets{}
	cc, err := NewClientCert(config.Certificate{Name: "payments-mtls", Source: SourceFile, CertFile: certFile, KeyFile: keyFile},
		ClientOptions{Log: testLogger(t), Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.GetClientCertificate(nil); !errors.Is(err, ErrNotReady) {
		t.Fatalf("GetClientCertificate before Run: %v, want ErrNotReady", err)
	}
	runClient(t, cc)
	waitFor(t, "the first certificate", cc.Changed, cc.Ready)
	if cc.Generation() != 1 || cc.Serial() != formatSerial(leaf1.SerialNumber) || !secrets.has(string(key1)) {
		t.Fatalf("generation %d serial %s (want %s), key registered %v", cc.Generation(), cc.Serial(),
			formatSerial(leaf1.SerialNumber), secrets.has(string(key1)))
	}
	if info := cc.Info(); info.Kind != KindClient || info.Name != "payments-mtls" ||
		info.Subjects[0] != "payments.sidecar" || !strings.Contains(info.Issuer, "sidekey test client CA") {
		t.Fatalf("Info() = %+v", info)
	}

	srv := mtlsServer(t, ca)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.GetClientCertificate = cc.GetClientCertificate
	client := &http.Client{Transport: tr}
	if got := mtlsGet(t, client, srv.URL); got != formatSerial(leaf1.SerialNumber) {
		t.Fatalf("server saw serial %s, want %s", got, formatSerial(leaf1.SerialNumber))
	}

	// Rotate: the key first, then the certificate; between the two writes
	// the pair does not match and the old certificate stays.
	cert2, key2, leaf2 := ca.issue(t, "payments.sidecar", true, now.Add(-time.Minute), now.Add(2*time.Hour))
	writeAtomic(t, keyFile, key2)
	writeAtomic(t, certFile, cert2)
	waitFor(t, "the rotated certificate", cc.Changed, func() bool { return cc.Serial() == formatSerial(leaf2.SerialNumber) })
	if cc.Generation() != 2 || !cc.Ready() || cc.Err() != nil {
		t.Fatalf("after rotation: generation %d, ready %v, err %v", cc.Generation(), cc.Ready(), cc.Err())
	}
	if !secrets.has(string(key2)) || secrets.has(string(key1)) {
		t.Fatalf("after rotation: new key registered %v, old key still registered %v", secrets.has(string(key2)), secrets.has(string(key1)))
	}

	// The pooled connection was made with the old certificate; a new
	// connection presents the new one. The proxy retires old connections
	// the same way: on Changed, it closes the idle ones.
	if got := mtlsGet(t, client, srv.URL); got != formatSerial(leaf1.SerialNumber) {
		t.Fatalf("kept-alive connection saw serial %s, want the old %s", got, formatSerial(leaf1.SerialNumber))
	}
	tr.CloseIdleConnections()
	if got := mtlsGet(t, client, srv.URL); got != formatSerial(leaf2.SerialNumber) {
		t.Fatalf("new connection saw serial %s, want %s", got, formatSerial(leaf2.SerialNumber))
	}

	// Rewriting the same certificate is not a new generation: the next
	// real rotation is the third.
	writeAtomic(t, certFile, cert2)
	cert3, key3, leaf3 := ca.issue(t, "payments.sidecar", true, now.Add(-time.Minute), now.Add(3*time.Hour))
	writeAtomic(t, keyFile, key3)
	writeAtomic(t, certFile, cert3)
	waitFor(t, "the third certificate", cc.Changed, func() bool { return cc.Serial() == formatSerial(leaf3.SerialNumber) })
	if cc.Generation() != 3 {
		t.Fatalf("generation %d after a same-content rewrite and one rotation, want 3", cc.Generation())
	}
}

func TestClientCertFileMissingIsNotReady(t *testing.T) {
	dir := t.TempDir()
	cc, err := NewClientCert(config.Certificate{Name: "m", Source: SourceFile,
		CertFile: filepath.Join(dir, "none.crt"), KeyFile: filepath.Join(dir, "none.key")}, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, cc)
	waitFor(t, "a load failure", nil, func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		return cc.lastErr != nil
	})
	if cc.Ready() || cc.Err() == nil || !strings.Contains(cc.Err().Error(), "none.crt") {
		t.Fatalf("Ready %v, Err %v", cc.Ready(), cc.Err())
	}
}

// fakePKI answers pki/issue/ROLE writes like Vault's PKI engine, issuing
// from ca with the clock's time; it fails while failing > 0.
type fakePKI struct {
	t   *testing.T
	ca  *testCA
	clk *fakeClock

	mu      sync.Mutex
	failing int
	issued  int
	lastReq map[string]any
}

func (f *fakePKI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/v1/pki/issue/payments" || r.Method != http.MethodPut && r.Method != http.MethodPost {
		http.Error(w, `{"errors":["unsupported path"]}`, http.StatusNotFound)
		return
	}
	if f.failing > 0 {
		f.failing--
		http.Error(w, `{"errors":["internal error"]}`, http.StatusInternalServerError)
		return
	}
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"errors":["bad json"]}`, http.StatusBadRequest)
		return
	}
	f.lastReq = req
	ttl, _ := time.ParseDuration(req["ttl"].(string))
	now := f.clk.Now()
	certPEM, keyPEM, leaf := f.ca.issue(f.t, req["common_name"].(string), true, now, now.Add(ttl))
	f.issued++
	_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
		"certificate":      string(certPEM),
		"private_key":      string(keyPEM),
		"private_key_type": "ec",
		"issuing_ca":       string(f.ca.pem),
		"ca_chain":         []string{string(f.ca.pem)},
		"serial_number":    formatSerial(leaf.SerialNumber),
		"expiration":       leaf.NotAfter.Unix(),
	}})
}

func TestClientCertVaultPKIRenewal(t *testing.T) {
	clk := newFakeClock()
	pki := &fakePKI{t: t, ca: newTestCA(t, "sidekey test PKI"), clk: clk}
	vsrv := httptest.NewServer(pki)
	t.Cleanup(vsrv.Close)
	conf := vaultapi.DefaultConfig()
	conf.Address, conf.MaxRetries = vsrv.URL, 0
	vc, err := vaultapi.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken("test-token")

	secrets := &recordingSecrets{}
	cc, err := NewClientCert(config.Certificate{Name: "payments-mtls", Source: SourceVaultPKI,
		Path: "pki/issue/payments", CommonName: "payments.sidecar", TTL: time.Hour},
		ClientOptions{Vault: VaultAPI(vc), Clock: clk, Log: testLogger(t), Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	cc.random = func() float64 { return 0 } // no jitter
	runClient(t, cc)

	// Issued at once, renewed two thirds into its hour.
	first := epoch.Add(40 * time.Minute)
	clk.WaitTimer(t, first)
	if cc.Generation() != 1 || !cc.Ready() || pki.lastReq["common_name"] != "payments.sidecar" || pki.lastReq["ttl"] != "3600s" {
		t.Fatalf("generation %d ready %v request %v", cc.Generation(), cc.Ready(), pki.lastReq)
	}
	if n := len(cc.Certificate().Certificate); n != 1 {
		t.Fatalf("chain of %d certificates; the self-signed root must be left out", n)
	}
	keys1 := secrets.live()
	// The registered values come back sorted; the key need not be first
	// or last among them.
	if !slices.ContainsFunc(keys1, func(v string) bool { return strings.Contains(v, "PRIVATE KEY") }) {
		t.Fatalf("the private key was not registered: %d values", len(keys1))
	}
	serial1 := cc.Serial()

	// The renewal fails once: retried after 1s, the old certificate kept.
	pki.mu.Lock()
	pki.failing = 1
	pki.mu.Unlock()
	clk.Advance(40 * time.Minute)
	clk.WaitTimer(t, first.Add(time.Second))
	if cc.Serial() != serial1 || !cc.Ready() {
		t.Fatalf("after a failed renewal: serial %s (was %s), ready %v", cc.Serial(), serial1, cc.Ready())
	}
	clk.Advance(time.Second)
	clk.WaitTimer(t, first.Add(time.Second).Add(40*time.Minute))
	if cc.Generation() != 2 || cc.Serial() == serial1 || cc.Err() != nil {
		t.Fatalf("after the retry: generation %d serial %s err %v", cc.Generation(), cc.Serial(), cc.Err())
	}
	keys2 := secrets.live()
	if len(keys2) == 0 || slices.ContainsFunc(keys2, func(v string) bool { return slices.Contains(keys1, v) }) {
		t.Fatalf("after renewal: %d values registered, some of the old key's among them", len(keys2))
	}
}

func TestNewClientCertChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  config.Certificate
		opts ClientOptions
		want error
	}{
		{"vault-pki without vault", config.Certificate{Name: "a", Source: SourceVaultPKI, Path: "pki/issue/x", CommonName: "x"}, ClientOptions{}, ErrNoVault},
		{"vault-pki without path", config.Certificate{Name: "a", Source: SourceVaultPKI, CommonName: "x"}, ClientOptions{Vault: VaultAPI(nil)}, nil},
		{"file without key", config.Certificate{Name: "a", Source: SourceFile, CertFile: "c"}, ClientOptions{}, nil},
		{"unknown source", config.Certificate{Name: "a", Source: "acme"}, ClientOptions{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClientCert(tc.cfg, tc.opts)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
