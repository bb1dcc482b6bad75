// Command grpcupstream is the token-checking gRPC origin of the peer
// benchmark's gRPC rows: grpc-go's interop TestService over h2c, behind a
// unary interceptor that admits a call only when its authorization
// metadata is exactly one "Bearer T" for the token given with -token, and
// answers UNAUTHENTICATED otherwise, counting both. UnaryCall answers a
// 64-byte payload; a request payload of another length than
// -request-body is answered INVALID_ARGUMENT and counted as altered.
//
// GET /_stats on -stats (plain HTTP/1.1, no token needed) reports the
// counters as JSON in the shape of cmd/upstream's, for the harness to
// read before and after a run.
//
//	grpcupstream -listen 127.0.0.1:9000 -stats 127.0.0.1:9001 -token T
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	listen  string
	stats   string
	token   string
	bodyLen int
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("grpcupstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "address of the gRPC service (h2c)")
	fs.StringVar(&o.stats, "stats", "127.0.0.1:0", "address of GET /_stats (HTTP/1.1)")
	fs.StringVar(&o.token, "token", "", "the bearer token calls must carry")
	fs.IntVar(&o.bodyLen, "request-body", -1, "expected request payload length; -1 = any")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.token == "" {
		return o, errors.New("grpcupstream: -token is required")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	ln, err := net.Listen("tcp4", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "grpcupstream: %v\n", err)
		return 1
	}
	sln, err := net.Listen("tcp4", o.stats)
	if err != nil {
		fmt.Fprintf(stderr, "grpcupstream: %v\n", err)
		return 1
	}
	u := &service{want: "Bearer " + o.token, bodyLen: o.bodyLen}
	srv := grpc.NewServer(grpc.UnaryInterceptor(u.auth))
	testgrpc.RegisterTestServiceServer(srv, u)
	stats := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_stats" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(u.stats())
	})}
	fmt.Fprintf(stdout, "listening %s, stats %s\n", ln.Addr(), sln.Addr())
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ln) }()
	go func() { done <- stats.Serve(sln) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		_ = stats.Close()
	case err := <-done:
		fmt.Fprintf(stderr, "grpcupstream: %v\n", err)
		return 1
	}
	b, _ := json.Marshal(u.stats())
	fmt.Fprintf(stderr, "grpcupstream: %s\n", b)
	return 0
}

// service is the TestService with its counters.
type service struct {
	testgrpc.UnimplementedTestServiceServer
	want    string // the authorization value admitted
	bodyLen int

	ok, unauthorized, badBody atomic.Uint64
}

// Stats is what GET /_stats answers: cmd/upstream's shape, no tokens issued.
type Stats struct {
	OK           uint64 `json:"ok"`
	Unauthorized uint64 `json:"unauthorized"`
	BadBody      uint64 `json:"bad_body"`
	Issued       uint64 `json:"issued"`
	IssueErrors  uint64 `json:"issue_errors"`
}

func (s *service) stats() Stats {
	return Stats{OK: s.ok.Load(), Unauthorized: s.unauthorized.Load(), BadBody: s.badBody.Load()}
}

// auth admits a call whose only authorization value is the token's.
func (s *service) auth(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := md.Get("authorization"); len(auth) != 1 || auth[0] != s.want {
		s.unauthorized.Add(1)
		return nil, status.Error(codes.Unauthenticated, "unauthorized")
	}
	return h(ctx, req)
}

// payload is the 64-byte answer.
var payload = []byte(`{"ok":true,"note":"sixty-four bytes of upstream response body."}`)

func (s *service) UnaryCall(_ context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if s.bodyLen >= 0 && len(in.GetPayload().GetBody()) != s.bodyLen {
		s.badBody.Add(1)
		return nil, status.Error(codes.InvalidArgument, "body")
	}
	s.ok.Add(1)
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: payload}}, nil
}
