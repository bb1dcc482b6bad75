package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestHostileInput sends malformed and malicious requests. Each is refused
// without reaching the upstream, and the proxy keeps serving afterwards.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	})
	p := startSidekey(t, configYAML(nil,
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "ok", prefix: "/ok/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}))
	waitOK(t, p, "/ok/ready")

	// healthy checks that a normal request still gets through.
	healthy := func(t *testing.T) {
		t.Helper()
		resp, body := p.get(t, "/ok/healthy")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("a normal request after the hostile one got %d: %q", resp.StatusCode, maskSecrets(string(body)))
		}
	}
	// forwarded returns the upstream paths received since index from.
	forwarded := func(from int) []string {
		var paths []string
		for _, r := range up.requests()[from:] {
			paths = append(paths, r.Path)
		}
		return paths
	}
	// refused sends raw on a new connection and asserts one of the wanted
	// statuses and that nothing reached the upstream.
	refused := func(t *testing.T, raw string, want ...int) (*http.Response, []byte) {
		t.Helper()
		before := up.count()
		resp, body, err := rawExchange(t, p.ProxyAddr, raw)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		ok := false
		for _, w := range want {
			ok = ok || resp.StatusCode == w
		}
		if !ok {
			t.Errorf("status %d, want %s; body %q", resp.StatusCode, statusList(want), maskSecrets(string(body)))
		}
		if got := forwarded(before); len(got) != 0 {
			t.Errorf("the upstream received %q", got)
		}
		return resp, body
	}

	t.Run("no route", func(t *testing.T) {
		before := up.count()
		resp, body := p.get(t, "/nowhere")
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("status %d, want 404", resp.StatusCode)
		}
		if m, err := jsonError(body); err != nil {
			t.Error(err)
		} else if m["error"] != "no_route" {
			t.Errorf("body %q, want {\"error\":\"no_route\"}", body)
		}
		if got := forwarded(before); len(got) != 0 {
			t.Errorf("the upstream received %q", got)
		}
		healthy(t)
	})

	t.Run("absolute form for another host", func(t *testing.T) {
		for _, target := range []string{"http://evil.example/", "http://evil.example/ok/steal"} {
			_, body := refused(t, "GET "+target+" HTTP/1.1\r\nHost: evil.example\r\n\r\n", clientErrors()...)
			if m, err := jsonError(body); err != nil {
				t.Errorf("%s: %v", target, err)
			} else if m["error"] == nil {
				t.Errorf("%s: body %q has no error field", target, body)
			}
		}
		healthy(t)
	})

	t.Run("oversized request header", func(t *testing.T) {
		big := strings.Repeat("a", 64<<10)
		refused(t, "GET /ok/big HTTP/1.1\r\nHost: localhost\r\nX-Big: "+big+"\r\n\r\n",
			http.StatusRequestHeaderFieldsTooLarge, http.StatusBadRequest)
		healthy(t)
	})

	t.Run("Content-Length with Transfer-Encoding chunked", func(t *testing.T) {
		before := up.count()
		hidden := "0\r\n\r\n" +
			"GET /ok/smuggled HTTP/1.1\r\n" +
			"Host: localhost\r\n" +
			"\r\n"
		smuggle := "POST /ok/front HTTP/1.1\r\n" +
			"Host: localhost\r\n" +
			"Content-Length: " + strconv.Itoa(len(hidden)) + "\r\n" +
			"Transfer-Encoding: chunked\r\n" +
			"\r\n" + hidden
		r := dialRaw(t, p.ProxyAddr)
		werr := r.send(smuggle)
		resp, body, err := r.response()
		if err != nil {
			t.Fatalf("no response (write error %v): %v", werr, err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d, want 400; body %q", resp.StatusCode, maskSecrets(string(body)))
		}
		// Anything the proxy parsed from this connection is handled before
		// a further request on it, so the upstream record is complete once
		// that one is answered (or the connection is closed).
		if r.send("GET /ok/after HTTP/1.1\r\nHost: localhost\r\n\r\n") == nil {
			for range 3 {
				_, body, err := r.response()
				if err != nil || string(body) == "ok /after" {
					break
				}
			}
		}
		for _, path := range forwarded(before) {
			if strings.Contains(path, "smuggled") {
				t.Errorf("the upstream received the smuggled request %q", path)
			}
			if strings.Contains(path, "front") {
				t.Errorf("the upstream received the ambiguous request %q", path)
			}
		}
		healthy(t)
	})

	t.Run("two different Content-Length headers", func(t *testing.T) {
		refused(t, "POST /ok/dup HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
			http.StatusBadRequest)
		healthy(t)
	})

	t.Run("garbage request line", func(t *testing.T) {
		refused(t, "GARBAGE-REQUEST-LINE\r\n\r\n", http.StatusBadRequest)
		refused(t, "\x00\x01\x02\x03 \x04\x05 \x06\r\n\r\n", http.StatusBadRequest)
		healthy(t)
	})
}

// clientErrors lists every 4xx status.
func clientErrors() []int {
	var s []int
	for c := 400; c < 500; c++ {
		s = append(s, c)
	}
	return s
}

func statusList(codes []int) string {
	if len(codes) == 100 && codes[0] == 400 {
		return "a 4xx"
	}
	return fmt.Sprint(codes)
}
