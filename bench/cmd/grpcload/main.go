// Command grpcload is the peer benchmark's gRPC load generator, wrk's
// counterpart for the gRPC rows (wrk speaks HTTP/1.1 only): -callers
// goroutines spread over -conns HTTP/2 connections (h2c) each make unary
// TestService calls back to back for -duration, every call with a
// -body-byte payload and the Authorization given, then it prints one line,
// "PEERBENCH " and a JSON summary in the shape of wrk's done() line in the
// harness: calls completed, the run's length, failed calls (a gRPC status
// other than OK: "status"; DEADLINE_EXCEEDED, past the 5 s per-call
// deadline: "timeout") and latency percentiles.
//
//	grpcload -addr 127.0.0.1:8080 -callers 32 -conns 4 -duration 10s -authorization 'Bearer x'
//	grpcload -addr 127.0.0.1:8080 -probe -authorization 'Bearer x'   # one call; exit 0 when it succeeds
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
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
	addr     string
	callers  int
	conns    int
	duration time.Duration
	auth     string
	body     int
	probe    bool
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("grpcload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "", "host:port of the gRPC server (h2c)")
	fs.IntVar(&o.callers, "callers", 32, "concurrent callers")
	fs.IntVar(&o.conns, "conns", 4, "HTTP/2 connections the callers share")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to call")
	fs.StringVar(&o.auth, "authorization", "", "the authorization metadata every call carries")
	fs.IntVar(&o.body, "body", 64, "request payload bytes")
	fs.BoolVar(&o.probe, "probe", false, "make one call and exit 0 when it succeeds")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.addr == "":
		return o, errors.New("grpcload: -addr is required")
	case o.callers < 1 || o.conns < 1:
		return o, errors.New("grpcload: -callers and -conns must be at least 1")
	}
	return o, nil
}

// callTimeout bounds one call, as wrk's --timeout bounds one request.
const callTimeout = 5 * time.Second

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	clients := make([]testgrpc.TestServiceClient, min(o.conns, o.callers))
	for i := range clients {
		cc, err := grpc.NewClient("passthrough:///"+o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Fprintf(stderr, "grpcload: %v\n", err)
			return 1
		}
		defer cc.Close()
		cc.Connect()
		clients[i] = testgrpc.NewTestServiceClient(cc)
	}
	if o.auth != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", o.auth)
	}
	req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, o.body)}}
	if o.probe {
		if err := call(ctx, clients[0], req); err != nil {
			fmt.Fprintf(stderr, "grpcload: %v\n", err)
			return 1
		}
		return 0
	}
	s := load(ctx, clients, o.callers, o.duration, req)
	if s.firstErr != nil {
		fmt.Fprintf(stderr, "grpcload: first failed call: %v\n", s.firstErr)
	}
	b, _ := json.Marshal(s)
	fmt.Fprintf(stdout, "PEERBENCH %s\n", b)
	return 0
}

func call(ctx context.Context, c testgrpc.TestServiceClient, req *testgrpc.SimpleRequest) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.UnaryCall(ctx, req)
	return err
}

// summary is the run, in the harness's wrk summary shape.
type summary struct {
	Requests   uint64 `json:"requests"`
	DurationUS uint64 `json:"duration_us"`
	Status     uint64 `json:"status"`
	Timeout    uint64 `json:"timeout"`
	P50US      uint64 `json:"p50_us"`
	P99US      uint64 `json:"p99_us"`
	MaxUS      uint64 `json:"max_us"`
	firstErr   error
}

// load runs callers goroutines, caller i on clients[i%len(clients)],
// until d has passed.
func load(ctx context.Context, clients []testgrpc.TestServiceClient, callers int, d time.Duration, req *testgrpc.SimpleRequest) summary {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		s    summary
		lats []time.Duration
	)
	start := time.Now()
	end := start.Add(d)
	for i := range callers {
		c := clients[i%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1<<14)
			var ok, failed, timedOut uint64
			var first error
			for {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					break
				}
				err := call(ctx, c, req)
				switch {
				case err == nil:
					ok++
					mine = append(mine, time.Since(t0))
					continue
				case status.Code(err) == codes.DeadlineExceeded:
					timedOut++
				default:
					failed++
				}
				if first == nil {
					first = err
				}
			}
			mu.Lock()
			s.Requests += ok
			s.Status += failed
			s.Timeout += timedOut
			if s.firstErr == nil {
				s.firstErr = first
			}
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	s.DurationUS = uint64(time.Since(start).Microseconds())
	if len(lats) > 0 {
		slices.Sort(lats)
		s.P50US = uint64(lats[len(lats)/2].Microseconds())
		s.P99US = uint64(lats[len(lats)*99/100].Microseconds())
		s.MaxUS = uint64(lats[len(lats)-1].Microseconds())
	}
	return s
}
