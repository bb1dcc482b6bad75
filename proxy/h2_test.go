package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"

	"github.com/sidekey/sidekey/config"
)

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
}

// An HTTP/2 request with prior knowledge on the app listener goes the same
// way as an HTTP/1.1 one: routed, injected, audited; HTTP/1.1 keeps working
// on the same port.
func TestH2CInbound(t *testing.T) {
	up, base := startBearerProxy(t, "tok-h2")
	req, _ := http.NewRequest("GET", base+"/b/warm", nil)
	get(t, req, 200).Body.Close()
	c := h2cClient()
	resp, err := c.Post(base+"/b/x?q=1", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(b) != "upstream ok" {
		t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, b)
	}
	if got := up.header.Load().Get("Authorization"); got != "Bearer tok-h2" {
		t.Errorf("upstream Authorization %q", got)
	}
	if got := *up.uri.Load(); got != "/x?q=1" {
		t.Errorf("upstream URI %q", got)
	}
	// The defences hold over HTTP/2 too.
	req, _ = http.NewRequest("GET", base+"/b/x", nil)
	req.Host = "rebind.attacker.example"
	if resp, err := c.Do(req); err != nil || resp.StatusCode != 421 {
		t.Fatalf("a foreign Host over HTTP/2: %v %v", resp, err)
	}
	get(t, mustRequest(t, "GET", base+"/b/after", ""), 200).Body.Close()
	_ = config.Route{}
}
