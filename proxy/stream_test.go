package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// A stream that keeps moving outlives the route timeout: events 100ms apart
// for well past a 300ms timeout all arrive, in order.
func TestStreamOutlivesRouteTimeout(t *testing.T) {
	const events = 10
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < events; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			<-tick.C
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	rc := testRoute("sse", "/s/", u, nil)
	rc.Timeout = 300 * time.Millisecond
	base := startProxy(t, &env{}, rc)
	resp, err := http.Get(base + "/s/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	n := 0
	for sc.Scan() {
		if sc.Text() != "" {
			if want := fmt.Sprintf("data: %d", n); sc.Text() != want {
				t.Fatalf("got %q, want %q", sc.Text(), want)
			}
			n++
		}
	}
	if n != events || sc.Err() != nil {
		t.Fatalf("got %d events, err %v", n, sc.Err())
	}
}

// An upstream silent for longer than the route timeout gets 504.
func TestSilentUpstreamTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	u, _ := url.Parse(srv.URL)
	rc := testRoute("slow", "/slow/", u, nil)
	rc.Timeout = 200 * time.Millisecond
	base := startProxy(t, &env{}, rc)
	resp, err := http.Get(base + "/slow/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusGatewayTimeout || body["error"] != "upstream_timeout" {
		t.Fatalf("got %d %v", resp.StatusCode, body)
	}
}
