package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestForwardCALeaf(t *testing.T) {
	clk := newFakeClock()
	ca := newForwardCA(t, clk.Now, "api.example.test", "127.0.0.1")
	for _, host := range []string{"api.example.test", "127.0.0.1"} {
		cert, err := ca.Leaf(host)
		if err != nil {
			t.Fatal(err)
		}
		l := cert.Leaf
		if l == nil || len(cert.Certificate) != 1 || string(cert.Certificate[0]) != string(l.Raw) {
			t.Fatalf("%s: Leaf not set or chain wrong", host)
		}
		if pub, ok := l.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", host, l.PublicKey)
		}
		if priv, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok || !priv.PublicKey.Equal(l.PublicKey) {
			t.Errorf("%s: private key does not match", host)
		}
		if n := l.SerialNumber.BitLen(); n != 128 {
			t.Errorf("%s: serial has %d bits", host, n)
		}
		if string(l.AuthorityKeyId) != string(ca.cert.SubjectKeyId) || len(l.SubjectKeyId) != 20 {
			t.Errorf("%s: AKI %x (CA SKI %x), SKI %x", host, l.AuthorityKeyId, ca.cert.SubjectKeyId, l.SubjectKeyId)
		}
		if l.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(l.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
			t.Errorf("%s: usage %b %v", host, l.KeyUsage, l.ExtKeyUsage)
		}
		if l.IsCA {
			t.Errorf("%s: leaf is a CA", host)
		}
		if got := subjects(l); !slices.Equal(got, []string{host}) {
			t.Errorf("%s: subjects %v", host, got)
		}
		if !l.NotBefore.Equal(clk.Now().Add(-clockSkew)) || !l.NotAfter.Equal(clk.Now().Add(DefaultLeafLifetime)) {
			t.Errorf("%s: valid %v to %v", host, l.NotBefore, l.NotAfter)
		}
		if again, _ := ca.Leaf(host); again != cert {
			t.Errorf("%s: not cached", host)
		}
	}
	if n := ca.mints.Load(); n != 2 {
		t.Errorf("%d mints", n)
	}
}

// TestForwardCAOpenSSL: OpenSSL's strict verifier accepts the leaves
// against cert_out alone and refuses names the CA was not made for.
func TestForwardCAOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed; skipping the OpenSSL verification")
	}
	t.Setenv("SSL_CERT_FILE", filepath.Join(t.TempDir(), "none"))
	dir := t.TempDir()
	ca := newForwardCA(t, nil, "api.example.test", "127.0.0.1")
	certOut, bundleOut := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "bundle.pem")
	if _, err := ca.WriteFiles(certOut, bundleOut); err != nil {
		t.Fatal(err)
	}
	writeLeaf := func(name string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	verify := func(caFile, leaf string, extra ...string) (string, error) {
		args := append([]string{"verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", caFile}, extra...)
		out, err := exec.Command(openssl, append(args, leaf)...).CombinedOutput()
		return string(out), err
	}
	for _, tt := range []struct{ host, flag string }{{"api.example.test", "-verify_hostname"}, {"127.0.0.1", "-verify_ip"}} {
		cert, err := ca.Leaf(tt.host)
		if err != nil {
			t.Fatal(err)
		}
		leaf := writeLeaf(tt.host+".pem", cert.Certificate[0])
		for _, caFile := range []string{certOut, bundleOut} {
			if out, err := verify(caFile, leaf, tt.flag, tt.host); err != nil || !strings.Contains(out, ": OK") {
				t.Errorf("openssl verify %s against %s: %v\n%s", tt.host, filepath.Base(caFile), err, out)
			}
		}
		text, err := exec.Command(openssl, "x509", "-noout", "-text", "-in", leaf).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl x509: %v\n%s", err, text)
		}
		san := "DNS:" + tt.host
		if tt.flag == "-verify_ip" {
			san = "IP Address:" + tt.host
		}
		aki := strings.ToUpper(strings.TrimSuffix(strings.ReplaceAll(fmt.Sprintf("% x", ca.cert.SubjectKeyId), " ", ":"), ":"))
		if !strings.Contains(string(text), san) || !strings.Contains(string(text), aki) {
			t.Errorf("leaf for %s lacks SAN %q or AKI %s:\n%s", tt.host, san, aki, text)
		}
	}
	for _, names := range [][]string{{"evil.test"}, {"10.0.0.1"}, {"api.example.test", "evil.test"}} {
		forged := writeLeaf("forged.pem", forge(t, ca, names...).Raw)
		if out, err := verify(certOut, forged); err == nil || !strings.Contains(out, "subtree violation") {
			t.Errorf("openssl accepted a leaf forged for %v: %v\n%s", names, err, out)
		}
	}
}

// tlsServer accepts connections on loopback and hands each to a TLS
// server with the config cfg returns; the handshake's error goes to errs.
func tlsServer(t *testing.T, cfg func() *tls.Config) (addr string, errs <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				tc := tls.Server(c, cfg())
				tc.SetDeadline(time.Now().Add(waitLimit))
				err := tc.Handshake()
				ch <- err
				if err == nil {
					_, _ = tc.Write([]byte("x"))
				}
				tc.Close()
			})
		}
	})
	return ln.Addr().String(), ch
}

func TestForwardCAHandshake(t *testing.T) {
	t.Setenv("SSL_CERT_FILE", filepath.Join(t.TempDir(), "none"))
	ca := newForwardCA(t, nil, "api.example.test", "git.example.test", "127.0.0.1")
	certOut := filepath.Join(t.TempDir(), "ca.pem")
	if _, err := ca.WriteFiles(certOut, ""); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(certOut)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		t.Fatal("cert_out holds no certificate")
	}
	sniAddr, sniErrs := tlsServer(t, func() *tls.Config { return &tls.Config{GetCertificate: ca.GetCertificate} })
	connect := func(host string) func() *tls.Config {
		return func() *tls.Config {
			cfg, err := ca.TLSConfig(host)
			if err != nil {
				t.Error(err)
				return &tls.Config{}
			}
			return cfg
		}
	}
	ipAddr, ipErrs := tlsServer(t, connect("127.0.0.1"))
	apiAddr, apiErrs := tlsServer(t, connect("api.example.test"))
	h2Addr, h2Errs := tlsServer(t, func() *tls.Config {
		cfg := connect("api.example.test")()
		cfg.NextProtos = []string{"h2", "http/1.1"}
		return cfg
	})

	tests := []struct {
		name       string
		addr       string
		errs       <-chan error
		serverName string // "" : none sent (an IP address)
		wantALPN   string
		ok         bool
		serverErr  string // for a refusal: what the server's error says
	}{
		{"SNI, DNS host", sniAddr, sniErrs, "api.example.test", "", true, ""},
		{"SNI, another intercepted host", sniAddr, sniErrs, "git.example.test", "", true, ""},
		{"SNI, host not intercepted", sniAddr, sniErrs, "evil.test", "", false, "not intercepted"},
		{"SNI missing", sniAddr, sniErrs, "", "", false, "no server name"},
		{"CONNECT to an IP literal", ipAddr, ipErrs, "", "http/1.1", true, ""},
		{"CONNECT to a DNS host", apiAddr, apiErrs, "api.example.test", "http/1.1", true, ""},
		{"CONNECT to one host, SNI for another", apiAddr, apiErrs, "git.example.test", "", false, "does not match"},
		{"CONNECT, caller's NextProtos", h2Addr, h2Errs, "api.example.test", "h2", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: roots, ServerName: tt.serverName, NextProtos: []string{"h2", "http/1.1"}}
			if tt.serverName == "" {
				cfg.ServerName = "127.0.0.1" // verified as an IP address, and not sent as SNI
			}
			conn, err := net.Dial("tcp", tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if tt.name == "SNI missing" {
				// A client that sends no SNI but would accept any leaf.
				cfg = &tls.Config{InsecureSkipVerify: true}
			}
			tc := tls.Client(conn, cfg)
			tc.SetDeadline(time.Now().Add(waitLimit))
			cerr := tc.Handshake()
			serr := <-tt.errs
			if !tt.ok {
				if cerr == nil || serr == nil || !strings.Contains(serr.Error(), tt.serverErr) {
					t.Fatalf("handshake: client %v, server %v; want the server to refuse (%s)", cerr, serr, tt.serverErr)
				}
				return
			}
			if cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			st := tc.ConnectionState()
			if st.NegotiatedProtocol != tt.wantALPN {
				t.Errorf("ALPN %q, want %q", st.NegotiatedProtocol, tt.wantALPN)
			}
			if len(st.VerifiedChains) != 1 || !st.VerifiedChains[0][1].Equal(ca.cert) {
				t.Errorf("not verified up to the CA")
			}
		})
	}
}

// TestForwardCACacheBound: 10,000 intercepted hosts leave the cache at
// its bound, least recently used out first.
func TestForwardCACacheBound(t *testing.T) {
	if testing.Short() {
		t.Skip("mints 10,000 leaves")
	}
	const hosts, bound = 10000, 1000
	names := make([]string, hosts)
	for i := range names {
		names[i] = fmt.Sprintf("h%d.example.test", i)
	}
	ca, err := NewForwardCA(names, ForwardCAOptions{Now: newFakeClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	for _, h := range names {
		if _, err := ca.Leaf(h); err != nil {
			t.Fatal(err)
		}
		if n := ca.cache.Len(); n > bound {
			t.Fatalf("cache holds %d leaves, bound %d", n, bound)
		}
	}
	if n := ca.cache.Len(); n != bound {
		t.Fatalf("cache holds %d leaves, want %d", n, bound)
	}
	if n := ca.mints.Load(); n != hosts {
		t.Fatalf("%d mints for %d hosts", n, hosts)
	}
	cert, err := ca.Leaf(names[hosts-1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.pool(), CurrentTime: ca.now(), DNSName: names[hosts-1]}); err != nil {
		t.Fatalf("leaf of a 10,000-host CA: %v", err)
	}
	if _, err := ca.Leaf(names[0]); err != nil {
		t.Fatal(err)
	}
	if n := ca.mints.Load(); n != hosts+1 {
		t.Fatalf("%d mints: the most recent host was reminted or the oldest was not", n)
	}
}

// TestForwardCABurst: many callers asking at once for a host not cached
// get one leaf, minted once.
func TestForwardCABurst(t *testing.T) {
	const callers, rounds = 64, 8
	var hosts []string
	for i := range rounds {
		hosts = append(hosts, fmt.Sprintf("burst%d.example.test", i))
	}
	ca := newForwardCA(t, nil, hosts...)
	for _, host := range hosts {
		before := ca.mints.Load()
		start := make(chan struct{})
		got := make([]*tls.Certificate, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				<-start
				var err error
				if got[i], err = ca.GetCertificate(&tls.ClientHelloInfo{ServerName: host}); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := ca.mints.Load() - before; n != 1 {
			t.Fatalf("%s: %d mints for one burst", host, n)
		}
		for _, c := range got {
			if c != got[0] {
				t.Fatalf("%s: callers got different leaves", host)
			}
		}
		// A caller that missed the cache just before a mint ended finds
		// the new leaf inside the shared call, and does not mint again.
		if c, err := ca.mintShared(host); err != nil || c != got[0] || ca.mints.Load()-before != 1 {
			t.Fatalf("%s: a late caller minted again (%v)", host, err)
		}
	}
}

// TestForwardCARenewal walks the injected clock through a leaf's life and
// the CA's end.
func TestForwardCARenewal(t *testing.T) {
	clk := newFakeClock()
	ca, err := NewForwardCA([]string{"api.example.test"}, ForwardCAOptions{Now: clk.Now, Lifetime: 36 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	start := clk.Now()
	leafAt := func(at time.Duration) *tls.Certificate {
		t.Helper()
		clk.Advance(start.Add(at).Sub(clk.Now()))
		c, err := ca.Leaf("api.example.test")
		if err != nil {
			t.Fatalf("at %v: %v", at, err)
		}
		if c.Leaf.NotAfter.After(ca.cert.NotAfter) || c.Leaf.NotBefore.Before(ca.cert.NotBefore) {
			t.Fatalf("at %v: leaf valid %v to %v, outside the CA's %v to %v", at,
				c.Leaf.NotBefore, c.Leaf.NotAfter, ca.cert.NotBefore, ca.cert.NotAfter)
		}
		return c
	}
	// Life is 25h (an hour of skew + 24h); a third of it is 8h20m, so
	// the leaf is reissued from 15h40m.
	first := leafAt(0)
	if c := leafAt(15*time.Hour + 39*time.Minute); c != first {
		t.Fatal("reissued with more than a third of its life left")
	}
	second := leafAt(15*time.Hour + 40*time.Minute)
	if second == first {
		t.Fatal("not reissued with a third of its life left")
	}
	if !second.Leaf.NotAfter.Equal(ca.cert.NotAfter) {
		t.Fatalf("second leaf ends %v, want the CA's end %v", second.Leaf.NotAfter, ca.cert.NotAfter)
	}
	// It ends with the CA: a new one could not last longer, so it is kept.
	if c := leafAt(36*time.Hour - time.Second); c != second {
		t.Fatal("a leaf that ends with the CA was reissued")
	}
	if n := ca.mints.Load(); n != 2 {
		t.Fatalf("%d mints, want 2", n)
	}
	if !ca.Ready() {
		t.Fatal("not ready before the CA's end")
	}
	clk.Advance(time.Second)
	if _, err := ca.Leaf("api.example.test"); !errors.Is(err, ErrCAExpired) {
		t.Fatalf("Leaf after the CA's end: %v", err)
	}
	if ca.Ready() || !errors.Is(ca.Err(), ErrCAExpired) {
		t.Fatalf("Ready %v, Err %v after the CA's end", ca.Ready(), ca.Err())
	}
	// A clock set back before a leaf's NotBefore gets a new leaf.
	clk.Advance(-24 * time.Hour)
	if c := leafAt(12 * time.Hour); c == second {
		t.Fatal("a leaf not yet valid was served")
	}
}

// TestForwardCACachedAllocs: a cached leaf costs no allocation.
func TestForwardCACachedAllocs(t *testing.T) {
	ca := newForwardCA(t, nil, "api.example.test")
	hello := &tls.ClientHelloInfo{ServerName: "api.example.test"}
	if _, err := ca.GetCertificate(hello); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = ca.GetCertificate(hello) }); n != 0 {
		t.Errorf("cached GetCertificate: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = ca.Leaf("api.example.test") }); n != 0 {
		t.Errorf("cached Leaf: %v allocations", n)
	}
}

// TestForwardCALeafMemory measures what 1,000 cached leaves hold.
func TestForwardCALeafMemory(t *testing.T) {
	const n = 1000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("host%d.example.test", i)
	}
	ca := newForwardCA(t, nil, names...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, h := range names {
		if _, err := ca.Leaf(h); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d cached leaves hold %d KiB of heap, %d bytes each", n, held>>10, held/n)
	if per := held / n; per > 16<<10 {
		t.Errorf("%d bytes per cached leaf", per)
	}
	runtime.KeepAlive(ca)
}

func BenchmarkForwardCAMint(b *testing.B) {
	ca := newForwardCA(b, nil, "api.example.test")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.mint("api.example.test", now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkForwardCAGetCertificateCached(b *testing.B) {
	ca := newForwardCA(b, nil, "api.example.test")
	hello := &tls.ClientHelloInfo{ServerName: "api.example.test"}
	if _, err := ca.GetCertificate(hello); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.GetCertificate(hello); err != nil {
			b.Fatal(err)
		}
	}
}
