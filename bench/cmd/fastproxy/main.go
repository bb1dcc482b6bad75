// Command fastproxy is the floor of the peer benchmark: a fasthttp proxy
// with no features. It sets the Authorization header, hands the request to
// one HostClient and returns whatever comes back. No routing, no header
// hygiene, no logging, no metrics.
//
//	fastproxy -listen 127.0.0.1:8080 -upstream 127.0.0.1:9000 -token T
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/valyala/fasthttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fastproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := fs.String("upstream", "", "upstream host:port")
	token := fs.String("token", "", "bearer token to inject")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *upstream == "" || *token == "" {
		fmt.Fprintln(stderr, "fastproxy: -upstream and -token are required")
		return 2
	}
	ln, err := net.Listen("tcp4", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "fastproxy: %v\n", err)
		return 1
	}
	hc := &fasthttp.HostClient{Addr: *upstream, MaxConns: 4096}
	value := "Bearer " + *token
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Request.Header.Set(fasthttp.HeaderAuthorization, value)
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	}}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		_ = srv.Shutdown()
		return 0
	case err := <-done:
		fmt.Fprintf(stderr, "fastproxy: %v\n", err)
		return 1
	}
}
