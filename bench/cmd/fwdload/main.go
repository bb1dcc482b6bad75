// Command fwdload is the peer benchmark's load client for what wrk cannot
// drive: sidekey's forward proxy. Each of -conns connections sends CONNECT
// HOST:443 to the proxy at -proxy, makes the TLS handshake with a leaf
// issued by the CA in -ca, and then sends the benchmark's request over
// that one keep-alive connection, one at a time, until -duration has
// passed. Without -proxy it sends the same requests in plain HTTP to
// -target, which measures the app-facing listener the same way, so that
// the two figures compare.
//
// It prints one line like wrk's done() callback in the peer benchmark
// (PEERBENCH {...}): requests, duration, errors by kind, responses with a
// status of 400 or more, and the p50, p99 and maximum latency in µs.
//
//	fwdload -proxy 127.0.0.1:3128 -ca ca.pem -host api.bench.example -conns 32 -duration 10s
//	fwdload -target 127.0.0.1:8080 -host api.bench.example -conns 32 -duration 10s
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// marker starts the summary line; the harness's wrkMarker.
const marker = "PEERBENCH "

type options struct {
	proxy, target, host, ca, path, auth string
	conns, body                         int
	duration                            time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("fwdload", flag.ExitOnError)
	fs.StringVar(&o.proxy, "proxy", "", "forward proxy host:port: CONNECT through it")
	fs.StringVar(&o.target, "target", "", "host:port to send plain HTTP to, without a proxy")
	fs.StringVar(&o.host, "host", "", "the route host: the CONNECT's host and every request's Host")
	fs.StringVar(&o.ca, "ca", "", "PEM file of the CA that issues the proxy's leaves")
	fs.StringVar(&o.path, "path", "/v1/items", "request path")
	fs.StringVar(&o.auth, "auth", "", "the Authorization header the application sends")
	fs.IntVar(&o.conns, "conns", 1, "keep-alive connections")
	fs.IntVar(&o.body, "body", 64, "POST body bytes; 0 sends GET")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to send")
	_ = fs.Parse(os.Args[1:])
	if (o.proxy == "") == (o.target == "") || o.host == "" || o.conns < 1 {
		fmt.Fprintln(os.Stderr, "fwdload: give -proxy or -target, -host, and -conns of at least 1")
		os.Exit(2)
	}
	s, err := run(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fwdload: %v\n", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(s)
	fmt.Printf("%s%s\n", marker, b)
}

// summary has the fields of the harness's wrkResult.
type summary struct {
	Requests   uint64 `json:"requests"`
	DurationUS uint64 `json:"duration_us"`
	Bytes      uint64 `json:"bytes"`
	Connect    uint64 `json:"connect"`
	Read       uint64 `json:"read"`
	Write      uint64 `json:"write"`
	Status     uint64 `json:"status"`
	Timeout    uint64 `json:"timeout"`
	P50US      uint64 `json:"p50_us"`
	P99US      uint64 `json:"p99_us"`
	MaxUS      uint64 `json:"max_us"`
}

// worker is one connection's counts.
type worker struct {
	lat                                       []uint32 // µs per request
	requests, bytes, connect, read, write, st uint64
	timeout                                   uint64
}

func run(o options) (summary, error) {
	var pool *x509.CertPool
	if o.proxy != "" {
		pem, err := os.ReadFile(o.ca)
		if err != nil {
			return summary{}, err
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return summary{}, errors.New("-ca holds no certificate")
		}
	}
	req := request(o)
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	start := time.Now()
	ws := make([]worker, o.conns)
	var wg sync.WaitGroup
	for i := range ws {
		wg.Go(func() { ws[i].loop(ctx, o, pool, req) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	var s summary
	var lat []uint32
	for _, w := range ws {
		s.Requests += w.requests
		s.Bytes += w.bytes
		s.Connect, s.Read, s.Write, s.Status, s.Timeout = s.Connect+w.connect, s.Read+w.read, s.Write+w.write, s.Status+w.st, s.Timeout+w.timeout
		lat = append(lat, w.lat...)
	}
	s.DurationUS = uint64(elapsed.Microseconds())
	if len(lat) > 0 {
		slices.Sort(lat)
		s.P50US, s.P99US, s.MaxUS = uint64(lat[len(lat)/2]), uint64(lat[len(lat)*99/100]), uint64(lat[len(lat)-1])
	}
	return s, nil
}

// request is the benchmark's request, as wrk's script sends it.
func request(o options) []byte {
	var b strings.Builder
	method := "GET"
	if o.body > 0 {
		method = "POST"
	}
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, o.path, o.host)
	if o.auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", o.auth)
	}
	if o.body > 0 {
		fmt.Fprintf(&b, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s", o.body, strings.Repeat("x", o.body))
	} else {
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

// loop keeps one connection busy until ctx ends, reconnecting after an
// error, as wrk does.
func (w *worker) loop(ctx context.Context, o options, pool *x509.CertPool, req []byte) {
	for ctx.Err() == nil {
		c, err := dial(ctx, o, pool)
		if err != nil {
			if ctx.Err() == nil {
				w.connect++
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		w.serve(ctx, c, req)
		c.Close()
	}
}

// serve sends requests on c one after another until ctx ends or c fails.
func (w *worker) serve(ctx context.Context, c net.Conn, req []byte) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	br := bufio.NewReaderSize(c, 16<<10)
	for ctx.Err() == nil {
		t0 := time.Now()
		_ = c.SetDeadline(t0.Add(5 * time.Second))
		if _, err := c.Write(req); err != nil {
			w.fail(ctx, err, &w.write)
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			w.fail(ctx, err, &w.read)
			return
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			w.fail(ctx, err, &w.read)
			return
		}
		w.requests++
		w.bytes += uint64(n)
		w.lat = append(w.lat, uint32(time.Since(t0).Microseconds()))
		if resp.StatusCode >= 400 {
			w.st++
		}
		if resp.Close {
			return
		}
	}
}

// fail counts an error in *kind, or as a timeout; an error caused by the
// run's end is not counted.
func (w *worker) fail(ctx context.Context, err error, kind *uint64) {
	if ctx.Err() != nil {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		w.timeout++
		return
	}
	*kind++
}

// dial opens the connection requests go over: plain to -target, or a
// CONNECT through -proxy and a TLS handshake with the route host.
func dial(ctx context.Context, o options, pool *x509.CertPool) (net.Conn, error) {
	var d net.Dialer
	if o.proxy == "" {
		return d.DialContext(ctx, "tcp", o.target)
	}
	c, err := d.DialContext(ctx, "tcp", o.proxy)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	dest := net.JoinHostPort(o.host, "443")
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", dest, dest); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK || br.Buffered() > 0 {
		c.Close()
		if err == nil {
			err = fmt.Errorf("CONNECT: %s", resp.Status)
		}
		return nil, err
	}
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: o.host, NextProtos: []string{"http/1.1"}})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}
