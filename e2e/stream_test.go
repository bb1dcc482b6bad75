package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const streamSize = 256 << 20

// pattern is a reader of n pseudo-random bytes: one random block repeated,
// each copy stamped with its index so reordering would change the hash.
type pattern struct {
	left  int64
	block []byte
	off   int
	index uint64
}

func newPattern(n int64) *pattern {
	b := make([]byte, 64<<10)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return &pattern{left: n, block: b}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if p.off == len(p.block) {
		p.off = 0
		p.index++
		for i := range 8 {
			p.block[i] = byte(p.index >> (8 * i))
		}
	}
	n := copy(b, p.block[p.off:])
	if int64(n) > p.left {
		n = int(p.left)
	}
	p.off += n
	p.left -= int64(n)
	return n, nil
}

// hashingReader hashes what passes through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (h *hashingReader) Read(b []byte) (int, error) {
	n, err := h.r.Read(b)
	h.h.Write(b[:n])
	return n, err
}

// peakRSS reads VmHWM (peak resident set) of a process, in bytes.
func peakRSS(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the process status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parsing %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// TestStreamingLargeBodies sends 256 MiB up and 256 MiB down through the
// proxy and checks that sidekey's peak RSS stays under 64 MiB, which it
// cannot do if it buffers whole bodies.
func TestStreamingLargeBodies(t *testing.T) {
	dir := dataDir(t)
	tok := secretValue(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), tok)

	downloadSum := make(chan string, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+tok {
			http.Error(w, "no credential", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/upload":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"n": n, "sha": hex.EncodeToString(h.Sum(nil))})
		case "/download":
			src := &hashingReader{r: newPattern(streamSize), h: sha256.New()}
			w.Header().Set("Content-Length", strconv.Itoa(streamSize))
			w.Header().Set("Content-Type", "application/octet-stream")
			if _, err := io.Copy(w, src); err == nil {
				downloadSum <- hex.EncodeToString(src.h.Sum(nil))
			}
		default:
			io.WriteString(w, "ok")
		}
	})
	p := startSidekey(t, configYAML(nil,
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "s", prefix: "/s/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}",
			timeout: "120s"}}))
	waitOK(t, p, "/s/ready")

	t.Run("upload", func(t *testing.T) {
		start := time.Now()
		src := &hashingReader{r: newPattern(streamSize), h: sha256.New()}
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.ProxyURL+"/s/upload", src)
		req.ContentLength = streamSize
		resp, err := p.Client.Do(req)
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		captureResponse(t, "POST /s/upload", resp, body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("upload: status %d, body %q", resp.StatusCode, maskSecrets(string(body)))
		}
		var got struct {
			N   int64  `json:"n"`
			Sha string `json:"sha"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("upload answer %q: %v", body, err)
		}
		if want := hex.EncodeToString(src.h.Sum(nil)); got.N != streamSize || got.Sha != want {
			t.Fatalf("upstream received %d bytes (sha %s), want %d (sha %s)", got.N, got.Sha, streamSize, want)
		}
		t.Logf("uploaded 256 MiB in %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("download", func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.ProxyURL+"/s/download", nil)
		resp, err := p.Client.Do(req)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		defer resp.Body.Close()
		captureResponse(t, "GET /s/download (headers only)", resp, nil)
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			t.Fatalf("download: status %d, body %q", resp.StatusCode, maskSecrets(string(body)))
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil {
			t.Fatalf("download: reading the body after %d bytes: %v", n, err)
		}
		var want string
		select {
		case want = <-downloadSum:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream did not finish sending")
		}
		if got := hex.EncodeToString(h.Sum(nil)); n != streamSize || got != want {
			t.Fatalf("client received %d bytes (sha %s), want %d (sha %s)", n, got, streamSize, want)
		}
		t.Logf("downloaded 256 MiB in %v", time.Since(start).Round(time.Millisecond))
	})

	rss := peakRSS(t, p.PID)
	t.Logf("sidekey peak RSS (VmHWM) after 256 MiB each way: %.1f MiB", float64(rss)/(1<<20))
	if rss >= 64<<20 {
		t.Errorf("sidekey peak RSS %.1f MiB, want < 64 MiB: bodies are being buffered", float64(rss)/(1<<20))
	}
}

// TestServerSentEvents checks that each event reaches the client before
// the upstream sends the next: the upstream waits for the client's
// acknowledgement of event i before writing event i+1.
func TestServerSentEvents(t *testing.T) {
	t.Parallel()
	const events = 5
	dir := dataDir(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))

	acks := make(chan int, events)
	problems := make(chan string, events+1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			io.WriteString(w, "ok")
			return
		}
		flusher, ok := w.(http.Flusher)
		if !ok {
			problems <- "upstream cannot flush"
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		flusher.Flush()
		for i := range events {
			if i > 0 {
				<-time.After(200 * time.Millisecond) // pacing, as a real feed
			}
			fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
			flusher.Flush()
			select {
			case got := <-acks:
				if got != i {
					problems <- fmt.Sprintf("client acknowledged event %d, expected %d", got, i)
					return
				}
			case <-time.After(10 * time.Second):
				problems <- fmt.Sprintf("event %d did not reach the client before event %d was due (10 s): the stream is buffered", i, i+1)
				return
			case <-r.Context().Done():
				return
			}
		}
	})
	p := startSidekey(t, configYAML(nil,
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "sse", prefix: "/sse/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}))
	waitOK(t, p, "/sse/ready")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.ProxyURL+"/sse/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := p.Client.Do(req)
	if err != nil {
		t.Fatalf("GET /sse/events: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got strings.Builder
	sc := bufio.NewScanner(resp.Body)
	next := 0
	for next < events && sc.Scan() {
		line := sc.Text()
		got.WriteString(line + "\n")
		if rest, ok := strings.CutPrefix(line, "data: event "); ok {
			i, _ := strconv.Atoi(rest)
			if i != next {
				t.Fatalf("received event %d, want %d", i, next)
			}
			acks <- i
			next++
		}
	}
	captureResponse(t, "GET /sse/events", resp, []byte(got.String()))
	select {
	case msg := <-problems:
		t.Fatal(msg)
	default:
	}
	if next != events {
		t.Fatalf("received %d of %d events (%v)", next, events, sc.Err())
	}
}

// TestWebsocket tunnels a websocket through the proxy to an echo upstream.
func TestWebsocket(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	tok := secretValue(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), tok)

	authSeen := make(chan string, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/echo" {
			io.WriteString(w, "ok")
			return
		}
		select {
		case authSeen <- r.Header.Get("Authorization"):
		default:
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, data); err != nil {
				return
			}
		}
	})
	p := startSidekey(t, configYAML(nil,
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "ws", prefix: "/ws/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}))
	waitOK(t, p, "/ws/ready")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+p.ProxyAddr+"/ws/echo", &websocket.DialOptions{
		HTTPClient: p.Client,
		HTTPHeader: http.Header{"Authorization": {"Bearer app-chosen"}},
	})
	if resp != nil {
		captureResponse(t, "websocket handshake", resp, nil)
	}
	if err != nil {
		t.Fatalf("websocket handshake through the proxy: %v", err)
	}
	defer c.CloseNow()
	for i := range 3 {
		msg := fmt.Sprintf("message %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read echo %d: %v", i, err)
		}
		recordCapture("websocket message in "+t.Name(), data)
		if typ != websocket.MessageText || string(data) != msg {
			t.Fatalf("echo %d = %v %q, want text %q", i, typ, data, msg)
		}
	}
	c.Close(websocket.StatusNormalClosure, "done")
	select {
	case got := <-authSeen:
		if got != "Bearer "+tok {
			t.Errorf("upstream handshake Authorization = %q, want the injected credential", maskSecrets(got))
		}
	default:
		t.Error("upstream saw no handshake")
	}
}
