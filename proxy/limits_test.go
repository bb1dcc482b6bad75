package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/sidekey/sidekey/config"
)

// limitedProxy serves one bearer route on loopback within lim.
func limitedProxy(t *testing.T, lim Limits) string {
	t.Helper()
	_, u := newUpstream(t)
	e := &env{}
	e.set("TOKEN", "tok")
	log, _ := logtest.NewNullLogger()
	px, err := New(&config.Config{Routes: []config.Route{testRoute("b", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"})}},
		testSet(t, e), Options{Log: log, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(serve(t, px), "http://")
}

// closedWithin reports how c ended within d: the bytes it got before the
// server closed it, or a failure when it stayed open.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection was not closed within %v", d)
	}
	return string(b)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one keep-alive request on c and reads the answer's status.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader) int {
	t.Helper()
	if _, err := io.WriteString(c, "GET /b/x HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A connection that sends nothing is closed after the header timeout
// without an answer; one that sent part of its headers gets 408.
func TestHeaderTimeout(t *testing.T) {
	addr := limitedProxy(t, Limits{HeaderTimeout: 200 * time.Millisecond})
	silent := dial(t, addr)
	partial := dial(t, addr)
	if _, err := io.WriteString(partial, "GET /b/x HTTP/1.1\r\nHost: loc"); err != nil {
		t.Fatal(err)
	}
	if got := closedWithin(t, silent, 5*time.Second); got != "" {
		t.Errorf("a silent connection got %q, want nothing", got)
	}
	if got := closedWithin(t, partial, 5*time.Second); !strings.HasPrefix(got, "HTTP/1.1 408") {
		t.Errorf("a connection with half its headers got %q, want 408", got)
	}
	// A keep-alive connection is not held to it after its first request.
	eventuallyServed(t, addr)
	c := dial(t, addr)
	br := bufio.NewReader(c)
	if status := roundTrip(t, c, br); status != 200 {
		t.Fatalf("status %d", status)
	}
	time.Sleep(300 * time.Millisecond) // past the header timeout: it no longer applies
	if status := roundTrip(t, c, br); status != 200 {
		t.Errorf("a keep-alive request after the header timeout: %d", status)
	}
}

// Past max_connections, a new connection displaces the oldest one that has
// not sent a request; when every connection is serving, it is closed.
func TestMaxConnections(t *testing.T) {
	addr := limitedProxy(t, Limits{MaxConnections: 3})
	eventuallyServed(t, addr) // the credential is in; its connection is closed
	// The listener accepts in the order of the dials: the two idle ones
	// are older than the active one.
	idle := []net.Conn{dial(t, addr), dial(t, addr)}
	active := dial(t, addr)
	abr := bufio.NewReader(active)
	if status := roundTrip(t, active, abr); status != 200 {
		t.Fatalf("status %d", status)
	}
	// A fourth connection displaces the oldest idle one, and is served.
	fourth := dial(t, addr)
	if status := roundTrip(t, fourth, bufio.NewReader(fourth)); status != 200 {
		t.Fatalf("the fourth connection: %d", status)
	}
	if got := closedWithin(t, idle[0], 5*time.Second); got != "" {
		t.Errorf("the displaced connection got %q", got)
	}
	// Now two are serving (active, fourth) and one is idle: a fifth
	// displaces that one; a sixth finds all serving and is closed.
	fifth := dial(t, addr)
	if status := roundTrip(t, fifth, bufio.NewReader(fifth)); status != 200 {
		t.Fatalf("the fifth connection: %d", status)
	}
	if got := closedWithin(t, idle[1], 5*time.Second); got != "" {
		t.Errorf("the second displaced connection got %q", got)
	}
	sixth := dial(t, addr)
	if got := closedWithin(t, sixth, 5*time.Second); got != "" {
		t.Errorf("a connection past the limit got %q", got)
	}
	if status := roundTrip(t, active, abr); status != 200 {
		t.Errorf("a serving connection after the refusals: %d", status)
	}
}

func TestMaxConnectionsPerIP(t *testing.T) {
	addr := limitedProxy(t, Limits{MaxConnectionsPerIP: 2})
	a, b := dial(t, addr), dial(t, addr) // no other connection of this test is open
	if status := roundTrip(t, a, bufio.NewReader(a)); status != 200 && status != 503 {
		t.Fatal(status)
	}
	third := dial(t, addr)
	if got := closedWithin(t, third, 5*time.Second); got != "" {
		t.Errorf("a third connection from one address got %q", got)
	}
	b.Close()
	eventuallyServed(t, addr)
}

// eventuallyServed polls until a new connection is served again.
func eventuallyServed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_, _ = io.WriteString(c, "GET /b/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			br := bufio.NewReader(c)
			line, _ := br.ReadString('\n')
			// Read to the server's close (Connection: close): the limiter
			// forgets a connection before closing it, so after EOF this one
			// no longer counts against the next test's connections.
			_, eofErr := io.Copy(io.Discard, br)
			c.Close()
			if strings.HasPrefix(line, "HTTP/1.1 200") && eofErr == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection served after one closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPerIPDefault(t *testing.T) {
	l := Limits{MaxConnectionsPerIP: -1}
	for addr, want := range map[net.Addr]int{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}: 0,
		&net.TCPAddr{IP: net.IPv6loopback}:       0,
		&net.TCPAddr{IP: net.IPv4zero}:           DefaultPerIP,
		&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1)}:  DefaultPerIP,
		&net.UnixAddr{Name: "/s", Net: "unix"}:   0,
	} {
		if got := l.forListener(addr).MaxConnectionsPerIP; got != want {
			t.Errorf("%v: per-IP %d, want %d", addr, got, want)
		}
	}
	if got := (Limits{MaxConnectionsPerIP: 0}).forListener(&net.TCPAddr{IP: net.IPv4zero}).MaxConnectionsPerIP; got != 0 {
		t.Errorf("an explicit 0 became %d", got)
	}
}
