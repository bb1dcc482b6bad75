package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRequest(t *testing.T) {
	got := string(request(options{host: "api.bench.example", path: "/v1/items", auth: "Bearer app", body: 3}))
	want := "POST /v1/items HTTP/1.1\r\nHost: api.bench.example\r\nAuthorization: Bearer app\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nxxx"
	if got != want {
		t.Errorf("request = %q, want %q", got, want)
	}
}

// TestRunTarget: requests over keep-alive connections, counted with the
// statuses of 400 and more apart.
func TestRunTarget(t *testing.T) {
	var n, conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Host != "api.bench.example" || string(b) != "xxxx" || r.Header.Get("Authorization") != "Bearer app" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		n.Add(1)
		io.WriteString(w, strings.Repeat("y", 64))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	s, err := run(options{target: srv.Listener.Addr().String(), host: "api.bench.example", path: "/", auth: "Bearer app",
		body: 4, conns: 2, duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests == 0 || s.Status+s.Connect+s.Read+s.Write+s.Timeout != 0 || uint64(n.Load()) < s.Requests {
		t.Errorf("summary %+v, served %d", s, n.Load())
	}
	if s.Bytes != 64*s.Requests || s.P50US == 0 || s.MaxUS < s.P99US {
		t.Errorf("summary %+v", s)
	}
	if c := conns.Load(); c != 2 {
		t.Errorf("%d connections for -conns 2: not kept alive", c)
	}
}
