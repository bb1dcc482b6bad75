package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// domain is the name sidekey gets certificates for; the test DNS server
// resolves it (and everything else) to 127.0.0.1.
const domain = "sidekey.test"

// acmeConfig renders a sidekey config with an app-facing listener, an
// admin listener and a TLS listener (all on loopback, port 0), one route
// sending everything to upstreamURL, and ACME with tls-alpn-01 against p.
// acmeExtra are more lines for tls.acme.
func acmeConfig(p *pebble, upstreamURL string, acmeExtra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `listen: 127.0.0.1:0
shutdown_timeout: 5s
admin:
  listen: 127.0.0.1:0
log:
  level: info
  format: json
  requests: false
routes:
  - name: app
    match: {path_prefix: /}
    upstream: %s
    timeout: 5s
tls:
  listen: 127.0.0.1:0
  acme:
    domains: [%s]
    email: ops@%s
    directory: %s
    challenge: tls-alpn-01
    ca_roots: file:%s
    storage: memory
`, upstreamURL, domain, domain, p.Directory, p.APICAFile)
	for _, l := range acmeExtra {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// listeners a sidekey process with inbound TLS announces.
var tlsListeners = []string{"proxy", "admin", "tls"}

// newUpstream starts a plain HTTP upstream on 127.0.0.1 answering "ok" and
// counting requests.
func newUpstream(t testing.TB) (url string, count *atomic.Int64) {
	t.Helper()
	count = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		count.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv.URL, count
}

func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// formatSerial renders a serial number the way the admin API does: lower
// case hex bytes separated by colons.
func formatSerial(n *big.Int) string {
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

// certInfo is one entry of GET /v1/certificates.
type certInfo struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	Subjects  []string  `json:"subjects"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// certificates reads GET /v1/certificates.
func (p *proc) certificates(t testing.TB) []certInfo {
	t.Helper()
	code, body := p.admin(t, "/v1/certificates")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/certificates: %d %s", code, body)
	}
	var out []certInfo
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /v1/certificates: %v: %s", err, body)
	}
	return out
}

// inbound returns the inbound certificate's entry of /v1/certificates.
func (p *proc) inbound(t testing.TB) certInfo {
	t.Helper()
	var found []certInfo
	for _, c := range p.certificates(t) {
		if c.Kind == "inbound" {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("GET /v1/certificates: want one inbound certificate, got %+v", found)
	}
	return found[0]
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(t testing.TB, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		code, body := p.admin(t, "/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d after %v: %s", code, limit, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gauge returns the value of the gauge name whose labels are exactly
// labels in a /metrics answer, parsed by the Prometheus text parser (an
// answer it refuses fails the test), and whether there is one.
func gauge(t testing.TB, exposition []byte, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(exposition))
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if maps.Equal(got, labels) && m.GetGauge() != nil {
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// httpsClient returns a client for the proxy's TLS listener at addr: it
// trusts roots, sends domain as SNI whatever the URL says, keeps at most
// one connection, and calls onConn with the serial of the certificate
// each new connection's handshake got.
func httpsClient(roots *x509.CertPool, addr string, onConn func(serial string)) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conf := &tls.Config{RootCAs: roots, ServerName: domain, NextProtos: []string{"http/1.1"}}
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
				if onConn != nil {
					onConn(formatSerial(tc.ConnectionState().PeerCertificates[0].SerialNumber))
				}
				return tc, nil
			},
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// get makes one request to the proxy's TLS listener and returns the serial
// of the certificate of the connection it went over and whether the
// response asked for the connection to be closed.
func get(c *http.Client, path string) (serial string, closed bool, err error) {
	resp, err := c.Get("https://" + domain + path)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", false, fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		return "", resp.Close, fmt.Errorf("answered %d %q", resp.StatusCode, body)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return "", resp.Close, fmt.Errorf("no TLS peer certificate")
	}
	return formatSerial(resp.TLS.PeerCertificates[0].SerialNumber), resp.Close, nil
}
