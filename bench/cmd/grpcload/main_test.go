package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// echo answers every call but the third, which fails, and records the
// authorization it was sent.
type echo struct {
	testgrpc.UnimplementedTestServiceServer
	n    atomic.Int64
	auth atomic.Pointer[string]
}

func (e *echo) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	a := strings.Join(md.Get("authorization"), ",")
	e.auth.Store(&a)
	if e.n.Add(1) == 3 {
		return nil, status.Error(codes.Internal, "third")
	}
	return &testgrpc.SimpleResponse{Payload: in.Payload}, nil
}

func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	e := &echo{}
	testgrpc.RegisterTestServiceServer(srv, e)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	addr := ln.Addr().String()

	if code := run(context.Background(), []string{"-addr", addr, "-probe", "-authorization", "Bearer x"}, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
		t.Fatalf("probe: exit %d", code)
	}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-addr", addr, "-callers", "3", "-conns", "2", "-duration", "300ms",
		"-authorization", "Bearer x"}, &out, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	line, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "PEERBENCH ")
	if !ok {
		t.Fatalf("output %q", out.String())
	}
	var s summary
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		t.Fatal(err)
	}
	calls := uint64(e.n.Load()) - 1 // the probe's
	if s.Status != 1 || s.Requests+s.Status != calls || s.DurationUS < uint64(300*time.Millisecond/time.Microsecond) || s.P50US == 0 || s.P99US < s.P50US {
		t.Errorf("summary %+v for %d calls, want one failed", s, calls)
	}
	if got := *e.auth.Load(); got != "Bearer x" {
		t.Errorf("authorization %q", got)
	}
	if code := run(context.Background(), []string{"-addr", "127.0.0.1:1", "-probe"}, &bytes.Buffer{}, &bytes.Buffer{}); code == 0 {
		t.Error("a probe of nothing succeeded")
	}
}
