package proxy

import (
	"context"
	"net"
	"net/http"
	"testing"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
)

// The admin API refuses what a web page could make a browser send it, as
// the proxy does: a rebound Host or a cross-site request. Liveness probes
// pass whatever their Host.
func TestAdminBrowserDefence(t *testing.T) {
	set, err := injector.NewSet(nil, injector.SetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := &Admin{Credentials: set, Required: func() []string { return nil }}
	a.SetPolicy(&config.Config{AllowedHosts: []string{"sidekey.internal"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.Serve(ln) }()
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	base := "http://" + ln.Addr().String()
	for _, tc := range []struct {
		path string
		hdr  []string
		want int
	}{
		{"/v1/credentials", nil, 200},
		{"/v1/credentials", []string{"Host", "sidekey.internal:9901"}, 200},
		{"/v1/credentials", []string{"Host", "rebind.attacker.example"}, 421},
		{"/v1/credentials", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"/v1/credentials/x/rotate", []string{"Origin", "https://evil.example"}, 403},
		{"/metrics", []string{"Host", "rebind.attacker.example"}, 421},
		{"/healthz", []string{"Host", "lb.internal"}, 200},
		{"/healthz", []string{"Sec-Fetch-Site", "cross-site"}, 403},
	} {
		req, _ := http.NewRequest("GET", base+tc.path, nil)
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			if tc.hdr[i] == "Host" {
				req.Host = tc.hdr[i+1]
			} else {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %v: %d, want %d", tc.path, tc.hdr, resp.StatusCode, tc.want)
		}
	}
}
