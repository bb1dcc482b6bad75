package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// scrubPrefix is the route prefix of the sidekey whose route sets
// scrub_body.
const scrubPrefix = "/hbs"

// TestTransparency sends the same requests to go-httpbin directly and
// through sidekey (route /hb/, prefix stripped, a bearer credential
// injected) and compares what the client got (status, headers, body,
// trailers) and what go-httpbin received (method, request target, headers,
// body, trailers). The direct request carries the Authorization sidekey
// injects, so go-httpbin's echoes agree; the differences sidekey is
// documented to make (Date, hop-by-hop headers, X-Request-Id, redirect
// targets mapped onto sidekey's URL, secrets scrubbed) are checked as such.
func TestTransparency(t *testing.T) {
	t.Parallel()
	hb := newHTTPBin(t)
	other := newUpstream(t, nil)
	dir := dataDir(t)
	tok := secretValue(t)
	otherTok := secretValue(t)
	writeSecretFile(t, filepath.Join(dir, "other"), otherTok)
	creds := []string{envCred("hbtok", "E2E_HB_TOKEN"), fileCred("othertok", filepath.Join(dir, "other"))}
	p := startSidekey(t, configYAML(nil, creds, []route{
		{name: "hb", prefix: "/hb/", upstream: hb.URL, strip: true, inject: "{credential: hbtok, as: bearer}", timeout: "15s"},
		{name: "other", prefix: "/other/", upstream: other.URL, strip: true, inject: "{credential: othertok, as: bearer}"},
	}), withEnv("E2E_HB_TOKEN="+tok))
	waitOK(t, p, "/hb/status/200")
	waitOK(t, p, "/other/ready")
	s := &transp{hb: hb, p: p, prefix: "/hb", tok: tok, direct: newDirectClient()}

	t.Run("methods", func(t *testing.T) {
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"} {
			t.Run(m, func(t *testing.T) {
				c := hbCall{method: m, target: "/anything/method?m=" + m, header: []string{"Content-Type", "text/plain"}}
				if m != "GET" && m != "HEAD" && m != "OPTIONS" {
					c.body = []byte("the body of a " + m)
				}
				d, pr := s.both(t, c)
				s.same(t, d, pr, cmp{})
			})
		}
	})

	t.Run("paths", func(t *testing.T) {
		for _, tc := range []struct{ name, target string }{
			{"encoded slash %2F kept", "/anything/projects/group%2Fproject"},
			{"encoded backslash %5C kept", "/anything/a%5Cb"},
			{"encoded space %20 kept", "/anything/a%20b"},
			{"encoded percent %25 kept", "/anything/100%25"},
			{"encoded unicode kept", "/anything/caf%C3%A9/%E2%9C%93"},
			{"lower-case percent-encoding kept", "/anything/caf%c3%a9"},
			{"sub-delims and colon kept", "/anything/a+b;c=d,e@f:g"},
			{"trailing slash kept", "/anything/dir/"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: tc.target})
				s.same(t, d, pr, cmp{})
			})
		}
		// Paths sidekey normalises for routing: what go-httpbin receives must
		// not carry dot segments (it would resolve them itself, to another
		// place than sidekey routed), and the answer must be go-httpbin's
		// answer for what it received.
		for _, tc := range []struct {
			name, target string
			dotFree      bool
		}{
			{"double slash", "/anything//double", false},
			{"dot segments inside the route normalised", "/anything/a/./b/../c", true},
			{"encoded dot segments inside the route normalised", "/anything/a/%2E/b/%2e%2E/c", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pr := s.proxiedCall(t, hbCall{target: tc.target})
				ps, ok := pr.lastSeen()
				if !ok {
					t.Fatalf("go-httpbin received nothing; sidekey answered %d %q", pr.status, clip(pr.body))
				}
				if tc.dotFree && hasDotSegment(ps.RequestURI) {
					t.Fatalf("go-httpbin received %q: dot segments forwarded un-normalised", ps.RequestURI)
				}
				t.Logf("%s forwarded as %s", tc.target, ps.RequestURI)
				d := s.directCall(t, hbCall{target: ps.RequestURI})
				s.same(t, d, pr, cmp{})
			})
		}
		// Dot segments never carry a request out of its route to the
		// upstream: go-httpbin never receives a dot segment, and the other
		// route's upstream never receives this route's credential. A path
		// that normalises into the other route is that route's request, with
		// that route's credential, exactly as the normalised path would be.
		for _, target := range []string{
			"/../other/x", "/%2e%2e/other/x", "/anything/../../other/x", "/..%2Fother/x", "/.%2E/other/x",
		} {
			t.Run("dot segments do not escape the route "+target, func(t *testing.T) {
				hbBefore, otherBefore := hb.count(), other.count()
				pr := s.proxiedCall(t, hbCall{target: target})
				for _, seen := range hb.since(hbBefore) {
					if hasDotSegment(seen.RequestURI) {
						t.Errorf("go-httpbin received %q: the dot segments escaped the route prefix", seen.RequestURI)
					} else {
						t.Logf("go-httpbin received %q", seen.RequestURI)
					}
				}
				for _, seen := range other.requests()[otherBefore:] {
					auth := seen.Header.Get("Authorization")
					switch {
					case auth == "Bearer "+tok:
						t.Errorf("the other route's upstream received %q with route hb's credential", seen.Path)
					case auth != "Bearer "+otherTok || seen.Path != "/x":
						t.Errorf("the other route's upstream received %q with Authorization %q, want /x with its own credential",
							seen.Path, maskSecrets(auth))
					default:
						t.Logf("routed to the other route as /other/x (its own credential)")
					}
				}
				t.Logf("sidekey answered %d", pr.status)
			})
		}
	})

	t.Run("queries", func(t *testing.T) {
		for _, tc := range []struct{ name, target string }{
			{"repeated keys and encodings", "/anything/q?a=1&a=2&a=3&b=x%20y&c=%2B&d=a+b&e=&f&g=%26%3D&h=%E2%9C%93&i=%2F%3F%23"},
			{"order kept", "/anything/q?z=1&a=2&m=3&a=4"},
			{"semicolons and reserved characters", "/anything/q?a=1;b=2&x=a/b?c:d@e"},
			{"lower-case percent-encoding", "/anything/q?x=%c3%a9"},
			{"encoded slash in a value", "/anything/q?ref=a%2Fb&path=%2Fetc%2F"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: tc.target})
				s.same(t, d, pr, cmp{})
			})
		}
	})

	t.Run("request bodies", func(t *testing.T) {
		for _, n := range []int{0, 1 << 10, 64 << 10, 3 << 20} {
			t.Run(sizeName(n), func(t *testing.T) {
				d, pr := s.both(t, hbCall{method: "POST", target: "/anything/body",
					header: []string{"Content-Type", "application/octet-stream"}, body: randomBytes(n)})
				s.same(t, d, pr, cmp{})
			})
		}
		t.Run("PUT 3 MiB text", func(t *testing.T) {
			body := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
			d, pr := s.both(t, hbCall{method: "PUT", target: "/put", header: []string{"Content-Type", "text/plain"}, body: body})
			s.same(t, d, pr, cmp{})
		})
	})

	t.Run("response bodies", func(t *testing.T) {
		for _, target := range []string{"/bytes/0", "/bytes/1024?seed=1", "/bytes/3145728?seed=2", "/html", "/xml", "/json", "/robots.txt", "/image/png"} {
			t.Run(target, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: target})
				s.same(t, d, pr, cmp{})
			})
		}
	})

	t.Run("status codes", func(t *testing.T) {
		for _, code := range []int{200, 201, 204, 304, 401, 404, 418, 500, 503} {
			t.Run(strconv.Itoa(code), func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: "/status/" + strconv.Itoa(code)})
				if d.status != code {
					t.Fatalf("go-httpbin answered %d directly, want %d", d.status, code)
				}
				s.same(t, d, pr, cmp{})
			})
		}
		t.Run("HEAD 204", func(t *testing.T) {
			d, pr := s.both(t, hbCall{method: "HEAD", target: "/status/204"})
			s.same(t, d, pr, cmp{})
		})
	})

	t.Run("headers", func(t *testing.T) {
		t.Run("repeated response headers", func(t *testing.T) {
			d, pr := s.both(t, hbCall{target: "/response-headers?X-Multi=one&X-Multi=two&X-Multi=three&X-Single=x&Cache-Control=no-store&Vary=Accept&Vary=Origin"})
			if got := pr.header.Values("X-Multi"); strings.Join(got, ",") != "one,two,three" {
				t.Errorf("X-Multi through sidekey = %q, want three values in order", got)
			}
			s.same(t, d, pr, cmp{})
		})
		t.Run("Set-Cookie from /cookies/set", func(t *testing.T) {
			// go-httpbin sets these in map order, which differs from one
			// answer to the next: compared as sets. The answer redirects to
			// /cookies; "redirects" checks the Location.
			d, pr := s.both(t, hbCall{target: "/cookies/set?a=1&b=two&c=x%2Cy"})
			dc, pc := slices.Sorted(slices.Values(d.header.Values("Set-Cookie"))), slices.Sorted(slices.Values(pr.header.Values("Set-Cookie")))
			if len(dc) != 3 || !slices.Equal(dc, pc) {
				t.Errorf("Set-Cookie: direct %q, through sidekey %q", dc, pc)
			}
			s.same(t, d, pr, cmp{noRedirect: true, ignoreResp: []string{"Set-Cookie"}})
		})
		t.Run("repeated Set-Cookie in order", func(t *testing.T) {
			d, pr := s.both(t, hbCall{target: "/response-headers?Set-Cookie=a%3D1&Set-Cookie=b%3D2%3B+Path%3D%2F&Set-Cookie=c%3D3"})
			s.same(t, d, pr, cmp{})
		})
		t.Run("Set-Cookie twice for one name", func(t *testing.T) {
			// Two cookies of one name on different paths are two cookies.
			d, pr := s.both(t, hbCall{target: "/response-headers?Set-Cookie=sid%3D1%3B+Path%3D%2Fa&Set-Cookie=sid%3D2%3B+Path%3D%2Fb"})
			s.same(t, d, pr, cmp{})
		})
		t.Run("repeated request headers", func(t *testing.T) {
			d, pr := s.both(t, hbCall{target: "/headers", header: []string{
				"X-Rep", "1", "X-Rep", "2", "X-Rep", "3", "Accept", "text/plain", "Accept", "application/json",
				"X-Empty", "", "X-Long", strings.Repeat("v", 3000), "X-Quoted", `"a, b"; q=0.5`,
			}})
			s.same(t, d, pr, cmp{})
		})
		t.Run("one Cookie header", func(t *testing.T) {
			d, pr := s.both(t, hbCall{target: "/cookies", header: []string{"Cookie", `a=1; b=two; c="quoted"; flag; d=x=y`}})
			s.same(t, d, pr, cmp{})
		})
		t.Run("repeated Cookie headers", func(t *testing.T) {
			// Two Cookie lines may reach the upstream as they are or joined
			// with "; " (RFC 9113 section 8.2.3 allows the join); nothing else.
			d, pr := s.both(t, hbCall{target: "/cookies", header: []string{"Cookie", "a=1", "Cookie", "b=2"}})
			s.same(t, d, pr, cmp{ignoreSeen: []string{"Cookie"}})
			if ps, ok := pr.lastSeen(); ok {
				got := ps.Header.Values("Cookie")
				if j := strings.Join(got, "; "); j != "a=1; b=2" {
					t.Errorf("upstream Cookie through sidekey = %q, want the two cookies, as sent or joined", got)
				}
			}
		})
		t.Run("app's Authorization replaced by the credential", func(t *testing.T) {
			d, pr := s.both(t, hbCall{target: "/headers", header: []string{"Authorization", "Bearer app-chosen"}})
			s.same(t, d, pr, cmp{})
		})
		t.Run("X-Request-Id generated", func(t *testing.T) {
			pr := s.proxiedCall(t, hbCall{target: "/status/200"})
			if ps, ok := pr.lastSeen(); !ok {
				t.Fatal("go-httpbin received nothing")
			} else if rid := ps.Header.Values("X-Request-Id"); len(rid) != 1 || rid[0] == "" {
				t.Errorf("upstream X-Request-Id = %q, want one generated by sidekey", rid)
			}
		})
		t.Run("app's X-Request-Id kept", func(t *testing.T) {
			pr := s.proxiedCall(t, hbCall{target: "/status/200", header: []string{"X-Request-Id", "app-rid-42"}})
			if ps, ok := pr.lastSeen(); !ok {
				t.Fatal("go-httpbin received nothing")
			} else if rid := ps.Header.Values("X-Request-Id"); len(rid) != 1 || rid[0] != "app-rid-42" {
				t.Errorf("upstream X-Request-Id = %q, want the app's app-rid-42", rid)
			}
		})
		t.Run("hop-by-hop request headers removed", func(t *testing.T) {
			d, pr := s.both(t, hbCall{target: "/headers", header: []string{
				"Connection", "X-Hop", "X-Hop", "1", "Keep-Alive", "timeout=5", "X-End", "kept",
			}})
			ds, _ := d.lastSeen()
			if ds.Header.Get("X-Hop") == "" {
				t.Fatal("the direct request lost X-Hop: the test cannot tell")
			}
			ps, ok := pr.lastSeen()
			if !ok {
				t.Fatal("go-httpbin received nothing")
			}
			for _, h := range []string{"X-Hop", "Keep-Alive"} {
				if v := ps.Header.Values(h); len(v) != 0 {
					t.Errorf("upstream received hop-by-hop %s: %q", h, v)
				}
			}
			if ps.Header.Get("X-End") != "kept" {
				t.Errorf("upstream lost the end-to-end X-End")
			}
		})
		t.Run("hop-by-hop response headers removed", func(t *testing.T) {
			d, pr := s.both(t, hbCall{target: "/response-headers?Connection=X-Resp-Hop&X-Resp-Hop=1&Keep-Alive=timeout%3D5&X-Resp-End=kept"})
			if d.header.Get("X-Resp-Hop") == "" {
				t.Fatal("the direct response lost X-Resp-Hop: the test cannot tell")
			}
			for _, h := range []string{"X-Resp-Hop", "Keep-Alive"} {
				if v := pr.header.Values(h); len(v) != 0 {
					t.Errorf("client received hop-by-hop %s through sidekey: %q", h, v)
				}
			}
			if pr.header.Get("X-Resp-End") != "kept" {
				t.Errorf("client lost the end-to-end X-Resp-End")
			}
		})
	})

	t.Run("compression", func(t *testing.T) {
		for _, tc := range []struct{ target, accept, encoding string }{
			{"/gzip", "gzip", "gzip"},
			{"/deflate", "deflate", "deflate"},
			{"/brotli", "br", ""},
			{"/anything/enc", "gzip, deflate, br;q=0.5, zstd", ""},
		} {
			t.Run(tc.target, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: tc.target, header: []string{"Accept-Encoding", tc.accept}})
				if got := pr.header.Get("Content-Encoding"); got != tc.encoding {
					t.Errorf("Content-Encoding through sidekey %q, want %q", got, tc.encoding)
				}
				s.same(t, d, pr, cmp{})
			})
		}
	})

	t.Run("ranges", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			header []string
			want   int
		}{
			{"first 100 bytes", []string{"Range", "bytes=0-99"}, 206},
			{"open-ended", []string{"Range", "bytes=1000-"}, 206},
			{"suffix", []string{"Range", "bytes=-10"}, 206},
			{"unsatisfiable", []string{"Range", "bytes=5000-"}, 416},
			// go-httpbin's ETag (range1024) is unquoted, so no If-Range matches it.
			{"If-Range, full body", []string{"Range", "bytes=10-19", "If-Range", `"range1024"`}, 200},
			{"no Range", nil, 200},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: "/range/1024", header: tc.header})
				if d.status != tc.want {
					t.Fatalf("go-httpbin answered %d directly, want %d", d.status, tc.want)
				}
				s.same(t, d, pr, cmp{})
			})
		}
	})

	t.Run("conditional requests", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			header []string
			want   int
		}{
			{"If-None-Match matching", []string{"If-None-Match", `"abc"`}, 304},
			{"If-None-Match other", []string{"If-None-Match", `"zzz"`}, 200},
			{"If-Match matching", []string{"If-Match", `"abc"`}, 200},
			{"If-Match other", []string{"If-Match", `"zzz"`}, 412},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: "/etag/abc", header: tc.header})
				if d.status != tc.want {
					t.Fatalf("go-httpbin answered %d directly, want %d", d.status, tc.want)
				}
				// Last-Modified is the time of each answer.
				s.same(t, d, pr, cmp{ignoreResp: []string{"Last-Modified"}})
			})
		}
	})

	t.Run("chunked streams", func(t *testing.T) {
		for _, target := range []string{"/stream/5", "/stream-bytes/50000?seed=7&chunk_size=1000", "/jsonl?count=4"} {
			t.Run(target, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: target})
				s.same(t, d, pr, cmp{})
			})
		}
	})

	t.Run("drip first byte", func(t *testing.T) {
		// 4 bytes over 2 s with a Content-Length: the first byte leaves
		// go-httpbin at once, the others 0.67 s apart.
		const target = "/drip?duration=2&numbytes=4&code=200&delay=0"
		var d, pr timedBody
		parallel(func() { d = s.timed(t, false, target) }, func() { pr = s.timed(t, true, target) })
		t.Logf("first body byte: direct after %v, through sidekey after %v", d.first.Round(time.Millisecond), pr.first.Round(time.Millisecond))
		if pr.status != d.status || string(pr.body) != string(d.body) || pr.cl != d.cl {
			t.Errorf("through sidekey %d %q (Content-Length %s), direct %d %q (Content-Length %s)",
				pr.status, pr.body, pr.cl, d.status, d.body, d.cl)
		}
		if pr.first > d.first+500*time.Millisecond {
			t.Errorf("the first body byte arrived through sidekey after %v, directly after %v: sidekey held the body",
				pr.first.Round(time.Millisecond), d.first.Round(time.Millisecond))
		}
	})

	t.Run("server-sent events spacing", func(t *testing.T) {
		// /sse: 4 events 0.5 s apart, each to arrive through sidekey no later
		// than 0.5 s after it arrives directly (relative to each request).
		const target = "/sse?count=4&duration=1500ms&delay=0"
		var d, pr timedEvents
		parallel(func() { d = s.events(t, false, target) }, func() { pr = s.events(t, true, target) })
		if d.err != nil || pr.err != nil {
			t.Fatalf("reading events: direct %v, through sidekey %v", d.err, pr.err)
		}
		if d.contentType != pr.contentType || pr.status != d.status {
			t.Errorf("through sidekey %d %q, direct %d %q", pr.status, pr.contentType, d.status, d.contentType)
		}
		if len(pr.at) != len(d.at) {
			t.Fatalf("%d events through sidekey, %d directly", len(pr.at), len(d.at))
		}
		for i := range d.at {
			t.Logf("event %d: direct after %v, through sidekey after %v", i, d.at[i].Round(time.Millisecond), pr.at[i].Round(time.Millisecond))
			if pr.at[i] > d.at[i]+500*time.Millisecond {
				t.Errorf("event %d arrived through sidekey after %v, directly after %v: the stream is buffered",
					i, pr.at[i].Round(time.Millisecond), d.at[i].Round(time.Millisecond))
			}
			if pr.ids[i] != d.ids[i] {
				t.Errorf("event %d: id %q through sidekey, %q directly", i, pr.ids[i], d.ids[i])
			}
		}
	})

	t.Run("Expect 100-continue", func(t *testing.T) {
		body := strings.Repeat("expect-body ", 1000)
		var res [2]hbResult
		for i, proxied := range []bool{false, true} {
			id := nextID()
			r := s.dial(t, proxied)
			head := s.rawHead(proxied, "POST", "/anything/expect", "HTTP/1.1", id,
				"Host: "+s.hostFor(proxied), "Content-Type: text/plain",
				"Content-Length: "+strconv.Itoa(len(body)), "Expect: 100-continue")
			if err := r.send(head); err != nil {
				t.Fatalf("%s: sending the head: %v", side(proxied), err)
			}
			status, err := r.interim(3 * time.Second)
			if err != nil {
				t.Errorf("%s: no interim response within 3 s: %v", side(proxied), err)
			} else if !strings.HasPrefix(status, "HTTP/1.1 100") {
				t.Fatalf("%s: first response %q, want 100 Continue (before the body was sent)", side(proxied), status)
			}
			if err := r.send(body); err != nil {
				t.Fatalf("%s: sending the body: %v", side(proxied), err)
			}
			resp, b, err := r.response(nil)
			if err != nil {
				t.Fatalf("%s: final response: %v", side(proxied), err)
			}
			res[i] = s.rawResult(proxied, "/anything/expect", id, resp, b)
		}
		s.same(t, res[0], res[1], cmp{ignoreSeen: []string{"Expect"}, noBody: true})
		if diff := s.echoDiff(res[0].body, res[1].body, "Expect"); diff != "" {
			t.Errorf("response body differs: %s", diff)
		}
	})

	t.Run("chunked upload", func(t *testing.T) {
		d, pr := s.both(t, hbCall{method: "POST", target: "/anything/chunked", header: []string{"Content-Type", "text/plain"},
			body: bytes.Repeat([]byte("chunked upload "), 20000), chunked: true})
		if ds, _ := d.lastSeen(); ds.framing() != "chunked" {
			t.Fatalf("the direct upload arrived with %s: the test cannot tell", ds.framing())
		}
		s.same(t, d, pr, cmp{anyFraming: true, noBody: true})
		if diff := s.echoDiff(d.body, pr.body, "Transfer-Encoding", "Content-Length"); diff != "" {
			t.Errorf("response body differs: %s", diff)
		}
	})

	t.Run("chunked upload with a request trailer", func(t *testing.T) {
		var res [2]hbResult
		for i, proxied := range []bool{false, true} {
			id := nextID()
			r := s.dial(t, proxied)
			req := s.rawHead(proxied, "POST", "/anything/uptrailer", "HTTP/1.1", id,
				"Host: "+s.hostFor(proxied), "Content-Type: text/plain", "Transfer-Encoding: chunked", "Trailer: X-Up-Trail") +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Up-Trail: yes\r\n\r\n"
			if err := r.send(req); err != nil {
				t.Fatalf("%s: %v", side(proxied), err)
			}
			resp, b, err := r.response(nil)
			if err != nil {
				t.Fatalf("%s: %v", side(proxied), err)
			}
			res[i] = s.rawResult(proxied, "/anything/uptrailer", id, resp, b)
		}
		if ds, _ := res[0].lastSeen(); ds.Trailer.Get("X-Up-Trail") != "yes" {
			t.Fatalf("the direct upload's trailer did not arrive (%v): the test cannot tell", ds.Trailer)
		}
		s.same(t, res[0], res[1], cmp{anyFraming: true, noBody: true})
		if diff := s.echoDiff(res[0].body, res[1].body, "Transfer-Encoding", "Content-Length", "Trailer"); diff != "" {
			t.Errorf("response body differs: %s", diff)
		}
	})

	t.Run("response trailers", func(t *testing.T) {
		for _, target := range []string{"/trailers?X-Trail=yes", "/trailers?X-Trail=yes&X-Other=2&X-Other=3"} {
			t.Run(target, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: target})
				if d.trailer.Get("X-Trail") != "yes" {
					t.Fatalf("no X-Trail trailer directly (%v): the test cannot tell", d.trailer)
				}
				if got := pr.trailer.Get("X-Trail"); got != "yes" {
					t.Errorf("trailer X-Trail through sidekey %q, want yes (trailers %v, announced %q)", got, pr.trailer, pr.header.Values("Trailer"))
				}
				s.same(t, d, pr, cmp{})
			})
		}
	})

	t.Run("websocket echo", func(t *testing.T) {
		big := randomBytes(70 << 10)
		for _, proxied := range []bool{false, true} {
			id := nextID()
			u := "ws://" + s.hb.Addr + "/websocket/echo"
			client := s.direct
			hdr := http.Header{hbIDHeader: {id}, "Authorization": {"Bearer " + tok}}
			if proxied {
				u, client = "ws://"+s.p.ProxyAddr+s.prefix+"/websocket/echo", s.p.Client
				hdr.Set("Authorization", "Bearer app-chosen")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: client, HTTPHeader: hdr})
			if resp != nil && proxied {
				s.capture(t, "websocket handshake", resp.Status, resp.Header, nil)
			}
			if err != nil {
				cancel()
				t.Fatalf("%s: handshake: %v", side(proxied), err)
			}
			c.SetReadLimit(1 << 20)
			for _, m := range []struct {
				typ  websocket.MessageType
				data []byte
			}{{websocket.MessageText, []byte("hello through " + side(proxied))}, {websocket.MessageBinary, big}} {
				if err := c.Write(ctx, m.typ, m.data); err != nil {
					t.Fatalf("%s: write: %v", side(proxied), err)
				}
				typ, data, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("%s: read: %v", side(proxied), err)
				}
				if typ != m.typ || !bytes.Equal(data, m.data) {
					t.Errorf("%s: echo of a %v message of %d bytes was a %v message of %d bytes", side(proxied), m.typ, len(m.data), typ, len(data))
				}
			}
			c.Close(websocket.StatusNormalClosure, "done")
			cancel()
			seen := s.hb.byID(id)
			if len(seen) != 1 {
				t.Fatalf("%s: go-httpbin received %d handshakes", side(proxied), len(seen))
			}
			if proxied {
				s.injected(t, seen[0])
			}
		}
	})

	t.Run("pipelining", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			reqs []piped
		}{
			{"GET POST GET written at once", []piped{
				{"GET", "/anything/pipe1", ""},
				{"POST", "/anything/pipe2", "the second request's body"},
				{"GET", "/status/418", ""},
			}},
			// go-httpbin answers HEAD /anything without a Content-Length.
			{"a request after a HEAD answered without Content-Length", []piped{
				{"HEAD", "/anything/pipe4", ""},
				{"GET", "/bytes/2048?seed=9", ""},
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, pr := s.pipeline(t, false, tc.reqs), s.pipeline(t, true, tc.reqs)
				for j := range tc.reqs {
					if j >= len(pr) {
						t.Errorf("response %d of %d through sidekey (%s %s) never came (the response before it closed the connection: %v)",
							j+1, len(tc.reqs), tc.reqs[j].method, tc.reqs[j].target, pr[j-1].close)
						continue
					}
					t.Run(tc.reqs[j].method+" "+tc.reqs[j].target, func(t *testing.T) {
						s.same(t, d[j], pr[j], cmp{})
					})
				}
			})
		}
	})

	t.Run("HTTP/1.0", func(t *testing.T) {
		for _, withHost := range []bool{false, true} {
			name := "without Host"
			if withHost {
				name = "with Host"
			}
			t.Run(name, func(t *testing.T) {
				var res [2]hbResult
				var closeErr [2]error
				for i, proxied := range []bool{false, true} {
					id := nextID()
					r := s.dial(t, proxied)
					var lines []string
					if withHost {
						lines = append(lines, "Host: "+s.hostFor(proxied))
					}
					if err := r.send(s.rawHead(proxied, "GET", "/anything/h10", "HTTP/1.0", id, lines...)); err != nil {
						t.Fatalf("%s: %v", side(proxied), err)
					}
					resp, b, err := r.response(nil)
					if err != nil {
						t.Fatalf("%s: %v", side(proxied), err)
					}
					res[i] = s.rawResult(proxied, "/anything/h10", id, resp, b)
					closeErr[i] = r.closed(3 * time.Second)
				}
				if closeErr[0] == nil && closeErr[1] != nil {
					t.Errorf("direct the connection closed after the HTTP/1.0 response; through sidekey: %v", closeErr[1])
				}
				if withHost {
					s.same(t, res[0], res[1], cmp{})
					return
				}
				// Without a Host, go-httpbin sees none directly and sidekey's
				// upstream host through it: only the request itself compares.
				if res[0].status != res[1].status {
					t.Errorf("status: direct %d, through sidekey %d (body %q)", res[0].status, res[1].status, clip(s.maskEcho(res[1].body)))
				}
				ds, _ := res[0].lastSeen()
				ps, ok := res[1].lastSeen()
				if !ok {
					t.Fatalf("go-httpbin received nothing through sidekey")
				}
				if ds.Method != ps.Method || ds.RequestURI != ps.RequestURI {
					t.Errorf("upstream request: direct %s %s, through sidekey %s %s", ds.Method, ds.RequestURI, ps.Method, ps.RequestURI)
				}
				s.injected(t, ps)
			})
		}
	})

	t.Run("redirects", func(t *testing.T) {
		for _, tc := range []struct{ name, target string }{
			{"redirect-to the upstream's absolute URL", "/redirect-to?url=" + url.QueryEscape(hb.URL+"/get?x=1")},
			{"redirect-to the upstream's bare origin", "/redirect-to?url=" + url.QueryEscape(hb.URL)},
			{"redirect-to a root-relative path", "/redirect-to?url=" + url.QueryEscape("/get?y=2")},
			{"redirect-to another host unchanged", "/redirect-to?url=" + url.QueryEscape("http://elsewhere.invalid/x")},
			{"redirect-to with status 307", "/redirect-to?status_code=307&url=" + url.QueryEscape(hb.URL+"/anything/t")},
			{"absolute-redirect first hop", "/absolute-redirect/2"},
			{"relative-redirect first hop", "/relative-redirect/2"},
			{"Content-Location on the upstream", "/response-headers?Content-Location=" + url.QueryEscape(hb.URL+"/anything/cl")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, pr := s.both(t, hbCall{target: tc.target})
				s.same(t, d, pr, cmp{})
			})
		}
		for _, target := range []string{"/relative-redirect/2", "/absolute-redirect/2", "/redirect/3", "/redirect/2?absolute=true"} {
			t.Run("followed "+target+" stays on sidekey", func(t *testing.T) {
				var hops []string
				left := false
				client := &http.Client{
					Transport: s.p.Client.Transport,
					Timeout:   30 * time.Second,
					CheckRedirect: func(req *http.Request, via []*http.Request) error {
						hops = append(hops, req.URL.String())
						if req.URL.Host != s.p.ProxyAddr || !strings.HasPrefix(req.URL.Path, s.prefix+"/") {
							left = true
							return http.ErrUseLastResponse
						}
						if len(via) > 10 {
							return fmt.Errorf("too many redirects")
						}
						return nil
					},
				}
				resp, err := client.Get(s.p.ProxyURL + s.prefix + target)
				if err != nil {
					t.Fatalf("GET %s: %v (hops %q)", target, err, hops)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				s.capture(t, "GET "+target+" followed", resp.Status, resp.Header, b)
				if left {
					t.Errorf("a redirect left sidekey: hops %q", hops)
				}
				if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != s.prefix+"/get" {
					t.Errorf("ended at %s with %d, want %s%s/get with 200 (hops %q)", resp.Request.URL, resp.StatusCode, s.p.ProxyURL, s.prefix, hops)
				}
			})
		}
	})

	t.Run("echo scrubbing", func(t *testing.T) {
		t.Run("/bearer response headers", func(t *testing.T) {
			pr := s.proxiedCall(t, hbCall{target: "/bearer"})
			if pr.status != 200 {
				t.Errorf("/bearer through sidekey answered %d, want 200 (the credential reached it)", pr.status)
			}
			s.noSecretInHeaders(t, pr)
		})
		t.Run("/headers response headers", func(t *testing.T) {
			s.noSecretInHeaders(t, s.proxiedCall(t, hbCall{target: "/headers"}))
		})
		for _, tc := range []struct{ name, query, header, want string }{
			{"header that is the credential", "X-Echo=" + tok, "X-Echo", "[REDACTED]"},
			{"header that contains the credential", "X-Echo-Mixed=" + url.QueryEscape("before "+tok+" after"), "X-Echo-Mixed", "before [REDACTED] after"},
			{"Set-Cookie carrying the credential", "Set-Cookie=" + url.QueryEscape("s="+tok+"; Path=/"), "Set-Cookie", "s=[REDACTED]; Path=/"},
			{"credential twice in one header", "X-Echo-Twice=" + url.QueryEscape(tok+","+tok), "X-Echo-Twice", "[REDACTED],[REDACTED]"},
		} {
			t.Run("/response-headers "+tc.name, func(t *testing.T) {
				pr := s.proxiedCall(t, hbCall{target: "/response-headers?" + tc.query})
				s.noSecretInHeaders(t, pr)
				if got := pr.header.Values(tc.header); len(got) != 1 || got[0] != tc.want {
					t.Errorf("%s through sidekey = %q, want %q", tc.header, maskSecrets(fmt.Sprint(got)), tc.want)
				}
			})
		}
	})

	t.Run("scrub_body", func(t *testing.T) {
		ps := startSidekey(t, configYAML(nil, []string{envCred("hbtok", "E2E_HB_TOKEN")}, []route{
			{name: "hbs", prefix: scrubPrefix + "/", upstream: hb.URL, strip: true, inject: "{credential: hbtok, as: bearer}",
				timeout: "15s", extra: []string{"scrub_body: true"}},
		}), withEnv("E2E_HB_TOKEN="+tok))
		waitOK(t, ps, scrubPrefix+"/status/200")
		ss := s.viaSidekey(ps, scrubPrefix, true)
		for _, target := range []string{"/bearer", "/headers", "/anything/scrub", "/response-headers?X-Echo=" + tok, "/stream/3", "/get"} {
			t.Run(strings.ReplaceAll(target, tok, "TOKEN")+" body scrubbed", func(t *testing.T) {
				pr := ss.proxiedCall(t, hbCall{target: target})
				if pr.status != 200 {
					t.Errorf("status %d, want 200", pr.status)
				}
				ss.noSecretInHeaders(t, pr)
				if bytes.Contains(pr.body, []byte(tok)) {
					t.Errorf("the body through a scrub_body route holds the credential: %q", clip(pr.body))
				}
				if !bytes.Contains(pr.body, []byte("[REDACTED]")) {
					t.Errorf("the body through a scrub_body route holds no [REDACTED]: %q", clip(pr.body))
				}
			})
		}
		t.Run("upstream asked for an uncompressed body", func(t *testing.T) {
			pr := ss.proxiedCall(t, hbCall{target: "/anything/ae", header: []string{"Accept-Encoding", "gzip, br"}})
			seen, ok := pr.lastSeen()
			if !ok {
				t.Fatal("go-httpbin received nothing")
			}
			if ae := seen.Header.Get("Accept-Encoding"); ae != "" && ae != "identity" {
				t.Errorf("upstream Accept-Encoding %q on a scrub_body route, want none or identity", ae)
			}
		})
		for _, target := range []string{"/range/1024", "/bytes/70000?seed=3", "/html", "/stream-bytes/20000?seed=4"} {
			t.Run(target+" without the credential unchanged", func(t *testing.T) {
				d, pr := ss.both(t, hbCall{target: target})
				// The route asks for an unencoded body (checked above).
				ss.same(t, d, pr, cmp{ignoreSeen: []string{"Accept-Encoding"}})
			})
		}
	})

	t.Run("malformed chunked body", func(t *testing.T) {
		for _, tc := range []struct{ name, body string }{
			{"bad first chunk size", "zz\r\nabc\r\n0\r\n\r\n"},
			{"bad chunk size after a good chunk", "5\r\nhello\r\nzz\r\nabc\r\n0\r\n\r\n"},
			{"chunk data not followed by CRLF", "5\r\nhelloXX\r\n0\r\n\r\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var status [2]int
				for i, proxied := range []bool{false, true} {
					r := s.dial(t, proxied)
					req := s.rawHead(proxied, "POST", "/anything/badchunk", "HTTP/1.1", nextID(),
						"Host: "+s.hostFor(proxied), "Content-Type: text/plain", "Transfer-Encoding: chunked") + tc.body
					werr := r.send(req)
					resp, b, err := r.response(nil)
					if err != nil {
						t.Fatalf("%s: no response (write error %v): %v", side(proxied), werr, err)
					}
					status[i] = resp.StatusCode
					if proxied {
						t.Logf("through sidekey: %d %q", resp.StatusCode, clip(s.maskEcho(b)))
					}
				}
				if status[0] != http.StatusBadRequest {
					t.Fatalf("go-httpbin answered %d directly, want 400: the test cannot tell", status[0])
				}
				if status[1] != http.StatusBadRequest {
					t.Errorf("through sidekey %d, want 400 (the app's malformed body, as directly)", status[1])
				}
				pr := s.proxiedCall(t, hbCall{target: "/status/200"})
				if pr.status != 200 {
					t.Errorf("a normal request afterwards got %d", pr.status)
				}
			})
		}
	})
}

// piped is one request of a pipeline.
type piped struct {
	method, target, body string
}

// pipeline writes reqs on one connection at once and reads the responses,
// as many as come: a server may close the connection after any of them.
func (s *transp) pipeline(t *testing.T, proxied bool, reqs []piped) []hbResult {
	t.Helper()
	r := s.dial(t, proxied)
	var all strings.Builder
	ids := make([]string, len(reqs))
	for j, q := range reqs {
		ids[j] = nextID()
		all.WriteString(s.rawHead(proxied, q.method, q.target, "HTTP/1.1", ids[j],
			"Host: "+s.hostFor(proxied), "Content-Type: text/plain", "Content-Length: "+strconv.Itoa(len(q.body))))
		all.WriteString(q.body)
	}
	if err := r.send(all.String()); err != nil {
		t.Fatalf("%s: writing %d requests at once: %v", side(proxied), len(reqs), err)
	}
	var res []hbResult
	for j, q := range reqs {
		resp, b, err := r.response(&http.Request{Method: q.method})
		if err != nil {
			if !proxied || j == 0 {
				t.Fatalf("%s: response %d of %d: %v", side(proxied), j+1, len(reqs), err)
			}
			t.Logf("%s: response %d of %d: %v", side(proxied), j+1, len(reqs), err)
			break
		}
		res = append(res, s.rawResult(proxied, q.target, ids[j], resp, b))
	}
	return res
}

// hasDotSegment reports whether a request target's path has a "." or ".."
// segment, percent-encoded or not.
func hasDotSegment(target string) bool {
	path, _, _ := strings.Cut(target, "?")
	if dec, err := url.PathUnescape(path); err == nil {
		path = dec
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("POST %d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("POST %d KiB", n>>10)
	}
	return fmt.Sprintf("POST %d B", n)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// parallel runs the functions at once and waits for them all.
func parallel(fs ...func()) {
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
}

// noSecretInHeaders fails when a response header through sidekey holds the
// route's credential: sidekey scrubs every response header.
func (s *transp) noSecretInHeaders(t *testing.T, r hbResult) {
	t.Helper()
	for k, vs := range r.header {
		for _, v := range vs {
			if strings.Contains(v, s.tok) {
				t.Errorf("response header %s holds the injected credential: %q", k, maskSecrets(v))
			}
		}
	}
	for k, vs := range r.trailer {
		for _, v := range vs {
			if strings.Contains(v, s.tok) {
				t.Errorf("response trailer %s holds the injected credential", k)
			}
		}
	}
}

// hostFor is the Host a raw request names: go-httpbin's address directly,
// sidekey's through it.
func (s *transp) hostFor(proxied bool) string {
	if proxied {
		return s.p.ProxyAddr
	}
	return s.hb.Addr
}

// rawHead renders a request head for target below the route, with the id
// header, the credential when direct, and lines.
func (s *transp) rawHead(proxied bool, method, target, proto, id string, lines ...string) string {
	var b strings.Builder
	if proxied {
		target = s.prefix + target
	}
	fmt.Fprintf(&b, "%s %s %s\r\n", method, target, proto)
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	if id != "" {
		b.WriteString(hbIDHeader + ": " + id + "\r\n")
	}
	if !proxied {
		b.WriteString("Authorization: Bearer " + s.tok + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawResult turns a response read from a raw connection into an hbResult.
func (s *transp) rawResult(proxied bool, target, id string, resp *http.Response, body []byte) hbResult {
	u := s.hb.URL + target
	if proxied {
		u = s.p.ProxyURL + s.prefix + target
	}
	return hbResult{url: u, status: resp.StatusCode, proto: resp.Proto, header: resp.Header, trailer: resp.Trailer,
		body: body, te: resp.TransferEncoding, cl: resp.ContentLength, close: resp.Close, seen: s.hb.byID(id)}
}

// echoDiff compares two go-httpbin JSON echoes with the named request
// headers left out of their "headers"; "" when they agree.
func (s *transp) echoDiff(d, p []byte, drop ...string) string {
	nd, err1 := dropEchoHeaders(d, drop)
	np, err2 := dropEchoHeaders(p, drop)
	if err1 != nil || err2 != nil {
		if bytes.Equal(d, p) {
			return ""
		}
		return s.bodyDiff(d, p)
	}
	if bytes.Equal(nd, np) {
		return ""
	}
	return s.bodyDiff(nd, np)
}

// ---- timing ----

// timedBody is a response whose first body byte was timed.
type timedBody struct {
	status int
	cl     string
	body   []byte
	first  time.Duration // from sending the request to the first body byte
}

// timed GETs target (directly or through sidekey) and times the first byte
// of the body.
func (s *transp) timed(t *testing.T, proxied bool, target string) timedBody {
	client, u := s.direct, s.hb.URL+target
	if proxied {
		client, u = s.p.Client, s.p.ProxyURL+s.prefix+target
	}
	start := time.Now()
	resp, err := client.Get(u)
	if err != nil {
		t.Errorf("%s: GET %s: %v", side(proxied), target, err)
		return timedBody{}
	}
	defer resp.Body.Close()
	var one [1]byte
	n, err := io.ReadFull(resp.Body, one[:])
	res := timedBody{status: resp.StatusCode, cl: resp.Header.Get("Content-Length"), first: time.Since(start)}
	if err != nil {
		t.Errorf("%s: reading the first byte: %v", side(proxied), err)
		return res
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s: reading the body: %v", side(proxied), err)
	}
	res.body = append(one[:n], rest...)
	if proxied {
		s.capture(t, "GET "+target, resp.Status, resp.Header, res.body)
	}
	return res
}

// timedEvents are the server-sent events of one response, with when each
// arrived after the request was sent.
type timedEvents struct {
	status      int
	contentType string
	at          []time.Duration
	ids         []string // each event's data line
	err         error
}

func (s *transp) events(t *testing.T, proxied bool, target string) timedEvents {
	client, u := s.direct, s.hb.URL+target
	if proxied {
		client, u = s.p.Client, s.p.ProxyURL+s.prefix+target
	}
	start := time.Now()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return timedEvents{err: err}
	}
	defer resp.Body.Close()
	ev := timedEvents{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}
	var all bytes.Buffer
	sc := bufio.NewScanner(io.TeeReader(resp.Body, &all))
	for sc.Scan() {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			ev.at = append(ev.at, time.Since(start))
			// The data holds the event's id and the time it was sent.
			id, _, _ := strings.Cut(strings.TrimPrefix(data, `{"id":`), ",")
			ev.ids = append(ev.ids, id)
		}
	}
	ev.err = sc.Err()
	if proxied {
		s.capture(t, "GET "+target, resp.Status, resp.Header, all.Bytes())
	}
	return ev
}
