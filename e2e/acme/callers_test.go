package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a certificate authority made in the test, for client
// certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serials atomic.Int64

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serials.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// client issues a client certificate (ECDSA P-256, client auth) with the
// given subject common name, URI SANs and DNS SANs.
func (ca *testCA) client(t testing.TB, cn string, uris, dnsNames []string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serials.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mtlsClient is httpsClient with a client certificate: cert (nil: none)
// is sent whatever CAs the server asks for, so that one from another CA
// reaches the server. maxVersion 0 is the default.
func mtlsClient(roots *x509.CertPool, addr string, cert *tls.Certificate, maxVersion uint16) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conf := &tls.Config{
		RootCAs: roots, ServerName: domain, NextProtos: []string{"http/1.1"}, MaxVersion: maxVersion,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		},
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy: nil,
			DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				raw, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				tc := tls.Client(raw, conf)
				if err := tc.HandshakeContext(ctx); err != nil {
					raw.Close()
					return nil, err
				}
				return tc, nil
			},
			DisableCompression: true,
		},
	}
}

// callerCertConfig is acmeConfig with client certificate callers: tls.client_ca
// and three cert callers (by URI SAN, DNS SAN and common name), a route
// only app may use and one every caller may.
func callerCertConfig(p *pebble, upstreamURL, clientCA string) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
shutdown_timeout: 5s
admin:
  listen: 127.0.0.1:0
log:
  level: debug
  format: json
  requests: true
callers:
  app:
    cert: {uri: "spiffe://cluster.local/ns/payments/sa/app"}
  batch:
    cert: {dns: batch.payments.internal}
  ops:
    cert: {cn: ops-console}
routes:
  - name: only-app
    match: {path_prefix: /only-app/}
    upstream: %[1]s
    timeout: 5s
    callers: [app]
  - name: app
    match: {path_prefix: /}
    upstream: %[1]s
    timeout: 5s
tls:
  listen: 127.0.0.1:0
  client_ca: file:%[2]s
  acme:
    domains: [%[3]s]
    email: ops@%[3]s
    directory: %[4]s
    challenge: tls-alpn-01
    ca_roots: file:%[5]s
    storage: memory
`, upstreamURL, clientCA, domain, p.Directory, p.APICAFile)
}

// callerInfo is one entry of GET /v1/callers.
type callerInfo struct {
	Name     string    `json:"name"`
	Kind     string    `json:"kind"`
	Requests uint64    `json:"requests"`
	Refused  uint64    `json:"refused"`
	LastSeen time.Time `json:"last_seen"`
}

// TestClientCertificateCallers: on the TLS listener (its certificate from
// Pebble), a client certificate from tls.client_ca is the caller named by
// its SPIFFE URI SAN, its DNS SAN or its common name; routes that do not
// list the caller refuse it (403). No certificate, or one from the CA
// whose names are no caller's, is refused with 401; one from another CA
// fails the TLS handshake. The app-facing plain listener cannot identify
// certificate callers (401). Nothing refused reaches the upstream; the
// audit lines and /v1/callers name the callers.
func TestClientCertificateCallers(t *testing.T) {
	data := t.TempDir()
	upURL, upCount := newUpstream(t)
	ca, otherCA := newTestCA(t, "e2e client CA"), newTestCA(t, "e2e other CA")
	caFile := filepath.Join(data, "client-ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	const spiffe = "spiffe://cluster.local/ns/payments/sa/app"
	appCert := ca.client(t, "payments-app", []string{spiffe}, nil)
	batchCert := ca.client(t, "batch", nil, []string{"batch.payments.internal"})
	opsCert := ca.client(t, "ops-console", nil, nil)
	strangerCert := ca.client(t, "stranger", []string{"spiffe://cluster.local/ns/payments/sa/stranger"}, []string{"stranger.internal"})
	foreignCert := otherCA.client(t, "payments-app", []string{spiffe}, nil)

	p := newPebble(t, data)
	sk := startSidekey(t, data, callerCertConfig(p, upURL, caFile), tlsListeners)
	p.start(t, port(t, sk.Addrs["tls"]), 3600)
	sk.waitReady(t, 30*time.Second)
	addr := sk.Addrs["tls"]

	var seq atomic.Int64
	// request GETs path+ID over a new connection with cert and returns
	// the status, the error code of a refusal and the ID.
	request := func(t *testing.T, cert *tls.Certificate, path string) (int, string, string, error) {
		t.Helper()
		id := fmt.Sprintf("cert-%d", seq.Add(1))
		c := mtlsClient(p.Roots, addr, cert, 0)
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + domain + path + id)
		if err != nil {
			return 0, "", id, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, "", id, err
		}
		var e struct{ Error string }
		if resp.StatusCode != http.StatusOK {
			if err := json.Unmarshal(body, &e); err != nil {
				t.Errorf("status %d with a body that is not JSON: %q", resp.StatusCode, body)
			}
			if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != `Bearer realm="sidekey"` {
				t.Errorf("401 with WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		}
		return resp.StatusCode, e.Error, id, nil
	}

	cases := []struct {
		name   string
		cert   *tls.Certificate
		path   string
		status int
		code   string
		caller string
	}{
		{"SPIFFE URI SAN", appCert, "/", 200, "", "app"},
		{"SPIFFE URI SAN on its own route", appCert, "/only-app/", 200, "", "app"},
		{"DNS SAN", batchCert, "/", 200, "", "batch"},
		{"common name", opsCert, "/", 200, "", "ops"},
		{"a caller the route does not list", batchCert, "/only-app/", 403, "caller_not_allowed", ""},
		{"no certificate", nil, "/", 401, "caller_unauthenticated", ""},
		{"a certificate of the CA naming no caller", strangerCert, "/", 401, "caller_unauthenticated", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := upCount.Load()
			status, code, id, err := request(t, c.cert, c.path)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if status != c.status || code != c.code {
				t.Fatalf("status %d %q, want %d %q", status, code, c.status, c.code)
			}
			reached := upCount.Load() - before
			if want := map[bool]int64{true: 1, false: 0}[c.status == 200]; reached != want {
				t.Errorf("the upstream got %d requests, want %d", reached, want)
			}
			if c.caller == "" {
				return
			}
			line, err := sk.waitLog(10*time.Second, func(e map[string]any) bool {
				path, _ := e["path"].(string)
				return e["msg"] == "request" && strings.HasSuffix(path, id)
			})
			if err != nil {
				t.Fatalf("no audit line for %s: %v", id, err)
			}
			if line["caller"] != c.caller || line["protocol"] != "HTTP/1.1" {
				t.Errorf("audit line caller %v protocol %v, want %s HTTP/1.1", line["caller"], line["protocol"], c.caller)
			}
		})
	}

	t.Run("a certificate from another CA fails the handshake", func(t *testing.T) {
		before := upCount.Load()
		_, _, _, err := request(t, foreignCert, "/")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("request with another CA's certificate: %v, want a TLS certificate error", err)
		}
		// With TLS 1.2 the server's refusal ends the handshake itself; the
		// same client with the CA's certificate shows TLS 1.2 is served.
		dial := func(cert *tls.Certificate) error {
			conf := mtlsClient(p.Roots, addr, cert, tls.VersionTLS12).Transport.(*http.Transport)
			c, err := conf.DialTLSContext(context.Background(), "tcp", addr)
			if err == nil {
				c.Close()
			}
			return err
		}
		if err := dial(appCert); err != nil {
			t.Fatalf("a TLS 1.2 handshake with the CA's certificate failed: %v", err)
		}
		if err := dial(foreignCert); err == nil {
			t.Error("a TLS 1.2 handshake with another CA's certificate succeeded")
		}
		if got := upCount.Load() - before; got != 0 {
			t.Errorf("the upstream got %d requests", got)
		}
	})

	t.Run("the plain listener cannot identify certificate callers", func(t *testing.T) {
		before := upCount.Load()
		resp, err := adminClient.Get("http://" + sk.Addrs["proxy"] + "/plain")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", resp.StatusCode)
		}
		if got := upCount.Load() - before; got != 0 {
			t.Errorf("the upstream got %d requests", got)
		}
	})

	t.Run("admin API", func(t *testing.T) {
		code, body := sk.admin(t, "/v1/callers")
		if code != http.StatusOK {
			t.Fatalf("/v1/callers = %d: %s", code, body)
		}
		var list []callerInfo
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("/v1/callers: %v: %s", err, body)
		}
		want := map[string][2]uint64{"app": {2, 0}, "batch": {1, 1}, "ops": {1, 0}}
		for _, c := range list {
			w, ok := want[c.Name]
			if !ok {
				t.Errorf("/v1/callers lists %q", c.Name)
				continue
			}
			delete(want, c.Name)
			if c.Kind != "cert" || c.Requests != w[0] || c.Refused != w[1] || c.LastSeen.IsZero() {
				t.Errorf("/v1/callers %s: %+v, want kind cert, %d requests, %d refused, last seen", c.Name, c, w[0], w[1])
			}
		}
		if len(want) > 0 {
			t.Errorf("/v1/callers lacks %v", want)
		}
	})
}
