// Command stdproxy is the net/http class of proxy in the peer benchmark
// (Vault Proxy and most Go sidecars are built this way): an
// httputil.ReverseProxy whose Rewrite hook sets the Authorization header.
// Rewrite replaces the deprecated Director hook and costs the same; the
// Transport keeps up to 1024 idle upstream connections, since the default
// of two per host would churn connections at any real concurrency.
//
//	stdproxy -listen 127.0.0.1:8080 -upstream 127.0.0.1:9000 -token T
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stdproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := fs.String("upstream", "", "upstream host:port")
	token := fs.String("token", "", "bearer token to inject")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *upstream == "" || *token == "" {
		fmt.Fprintln(stderr, "stdproxy: -upstream and -token are required")
		return 2
	}
	ln, err := net.Listen("tcp4", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "stdproxy: %v\n", err)
		return 1
	}
	target := &url.URL{Scheme: "http", Host: *upstream}
	value := "Bearer " + *token
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", value)
		},
		Transport: &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		ErrorLog: log.New(stderr, "stdproxy: ", 0),
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 60 * time.Second, ErrorLog: log.New(stderr, "stdproxy: ", 0)}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return 0
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return 0
		}
		fmt.Fprintf(stderr, "stdproxy: %v\n", err)
		return 1
	}
}
