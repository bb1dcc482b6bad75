package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
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

// A body of known length reaches the app as it arrives: the first byte of
// a slow small body comes before the upstream sends the rest. The upstream
// sends the rest only once the app has the first byte (or gives up after
// a while), so a proxy that held the body would make it give up.
func TestSlowKnownLengthBodyStreams(t *testing.T) {
	for _, size := range []int{4, 200 << 10} { // small, buffered when whole; large, streamed anyway
		gotFirst := make(chan struct{})
		gaveUp := make(chan bool, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/drip" {
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(size))
			_, _ = w.Write([]byte("a"))
			w.(http.Flusher).Flush()
			select {
			case <-gotFirst:
				gaveUp <- false
			case <-time.After(5 * time.Second):
				gaveUp <- true
			}
			_, _ = w.Write(bytes.Repeat([]byte("b"), size-1))
		}))
		u, _ := url.Parse(srv.URL)
		e := &env{}
		e.set("TOKEN", "tok")
		base := startProxy(t, e, testRoute("b", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"}))
		waitReady(t, base+"/b/ready")
		resp, err := http.Get(base + "/b/drip")
		if err != nil {
			t.Fatal(err)
		}
		first := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			t.Fatal(err)
		}
		close(gotFirst)
		rest, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(rest) != size-1 || resp.ContentLength != int64(size) {
			t.Errorf("size %d: read %d more bytes (%v), Content-Length %d", size, len(rest), err, resp.ContentLength)
		}
		if <-gaveUp {
			t.Errorf("size %d: the first byte was held until the upstream sent the rest", size)
		}
		srv.Close()
	}
}

// waitReady polls url until the proxy answers it with anything but 503
// (its credential has loaded).
func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
