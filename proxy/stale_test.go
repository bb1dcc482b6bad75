package proxy

import (
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
)

// An upstream that closes idle keep-alive connections sooner than the
// proxy's pool drops them (Node.js closes after 5s) gets each POST on a new
// connection, not a 502 from writing to the closed one; over TLS too.
func TestUpstreamClosedIdleConnectionIsReplaced(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		name := map[bool]string{false: "http", true: "https"}[overTLS]
		t.Run(name, func(t *testing.T) {
			closed := make(chan struct{}, 8)
			var hits atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				_, _ = io.WriteString(w, "ok")
			}))
			// Longer than staleAfter: by the time the upstream closes it, the
			// connection has sat unused long enough to be checked.
			srv.Config.IdleTimeout = 2 * staleAfter
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateClosed {
					closed <- struct{}{}
				}
			}
			e := &env{}
			e.set("TOKEN", "tok")
			var opts Options
			if overTLS {
				srv.StartTLS()
				pool := x509.NewCertPool()
				pool.AddCert(srv.Certificate())
				opts.CAPool = func(config.Ref) (*x509.CertPool, error) { return pool, nil }
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			u, _ := url.Parse(srv.URL)
			rc := testRoute("r", "/r/", u, &config.Inject{Credential: "cred", As: "bearer"})
			if overTLS {
				rc.UpstreamTLS = &config.UpstreamTLS{CA: &config.Ref{Kind: config.RefFile, Name: "pinned"}, ServerName: "example.com"}
			}
			base := startProxyOpts(t, e, opts, rc)
			get(t, mustRequest(t, "GET", base+"/r/x", ""), http.StatusOK).Body.Close() // the credential is loaded
			for i := range 3 {
				select {
				case <-closed: // the upstream closed the proxy's idle connection
				case <-time.After(10 * time.Second):
					t.Fatal("the upstream did not close its idle connection")
				}
				before := hits.Load()
				resp, err := http.DefaultTransport.RoundTrip(mustRequest(t, "POST", base+"/r/x", "payload"))
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || hits.Load() != before+1 {
					t.Fatalf("POST %d after the upstream closed the idle connection: %d, %d upstream requests; want 200 and 1",
						i+1, resp.StatusCode, hits.Load()-before)
				}
			}
		})
	}
}
