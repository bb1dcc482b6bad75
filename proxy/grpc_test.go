package proxy

import (
	"context"
	"io"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sidekey/sidekey/config"
)

// grpcUpstream is grpc-go's interop TestService over h2c, which admits a
// call only with the token it is told (Bearer), and reports a trailer.
type grpcUpstream struct {
	testgrpc.UnimplementedTestServiceServer
	token   atomic.Pointer[string]
	calls   atomic.Int64
	refused atomic.Int64
}

func (u *grpcUpstream) auth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if want := "Bearer " + *u.token.Load(); len(md.Get("authorization")) != 1 || md.Get("authorization")[0] != want {
		u.refused.Add(1)
		return status.Error(codes.Unauthenticated, "bad token")
	}
	u.calls.Add(1)
	return nil
}

func (u *grpcUpstream) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := u.auth(ctx); err != nil {
		return nil, err
	}
	if in.ResponseStatus != nil {
		return nil, status.Error(codes.Code(in.ResponseStatus.Code), in.ResponseStatus.Message)
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trail", "yes"))
	return &testgrpc.SimpleResponse{Payload: in.Payload}, nil
}

func (u *grpcUpstream) StreamingOutputCall(in *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	if err := u.auth(s.Context()); err != nil {
		return err
	}
	for _, p := range in.ResponseParameters {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.Size)}}); err != nil {
			return err
		}
	}
	return nil
}

func (u *grpcUpstream) StreamingInputCall(s grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	if err := u.auth(s.Context()); err != nil {
		return err
	}
	total := 0
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.Payload.GetBody())
	}
}

func (u *grpcUpstream) FullDuplexCall(s grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	if err := u.auth(s.Context()); err != nil {
		return err
	}
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.Payload}); err != nil {
			return err
		}
	}
}

func startGRPCUpstream(t *testing.T, token string) (*grpcUpstream, string) {
	t.Helper()
	u := &grpcUpstream{}
	u.token.Store(&token)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, u)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return u, ln.Addr().String()
}

// grpcThrough starts a proxy with one h2c route (and an http1 one) to the
// upstream, injecting TOKEN, and a gRPC client to it.
func grpcThrough(t *testing.T, e *env, upAddr string) (testgrpc.TestServiceClient, *grpc.ClientConn) {
	t.Helper()
	u, _ := url.Parse("http://" + upAddr)
	h2 := testRoute("grpc", "/grpc.testing.TestService/", u, &config.Inject{Credential: "cred", As: "bearer"})
	h2.StripPrefix, h2.Protocol = false, config.ProtoH2C
	h1 := testRoute("h1", "/grpc.testing.UnimplementedService/", u, &config.Inject{Credential: "cred", As: "bearer"})
	h1.StripPrefix = false
	base := startProxy(t, e, h2, h1)
	cc, err := grpc.NewClient(strings.TrimPrefix(base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc), cc
}

func TestGRPCThroughH2C(t *testing.T) {
	up, addr := startGRPCUpstream(t, "tok-grpc")
	e := &env{}
	e.set("TOKEN", "tok-grpc")
	c, cc := grpcThrough(t, e, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var trailer metadata.MD
	var resp *testgrpc.SimpleResponse
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer)); status.Code(err) != codes.Unavailable {
			break // the credential is in (until then: UNAVAILABLE)
		}
	}
	if err != nil || string(resp.Payload.Body) != "ping" || trailer.Get("x-trail")[0] != "yes" {
		t.Fatalf("unary: %v %v, trailer %v", resp, err, trailer)
	}

	// An upstream's error code reaches the client.
	_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "nope"}})
	if status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != "nope" {
		t.Errorf("upstream error: %v", err)
	}

	// Server streaming.
	ss, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}, {Size: 70000}, {Size: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for {
		m, err := ss.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(m.Payload.Body))
	}
	if len(sizes) != 3 || sizes[1] != 70000 {
		t.Errorf("server stream: %v", sizes)
	}

	// Client streaming.
	cs, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{100, 200, 300} {
		if err := cs.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := cs.CloseAndRecv(); err != nil || r.AggregatedPayloadSize != 600 {
		t.Errorf("client stream: %v %v", r, err)
	}

	// Bidirectional: each answer comes before the next message is sent,
	// so both directions are open at once.
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		msg := []byte{byte('a' + i)}
		if err := bs.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: msg}}); err != nil {
			t.Fatal(err)
		}
		r, err := bs.Recv()
		if err != nil || string(r.Payload.Body) != string(msg) {
			t.Fatalf("bidi %d: %v %v", i, r, err)
		}
	}
	_ = bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		t.Errorf("bidi end: %v", err)
	}

	// A deadline is honoured.
	dctx, dcancel := context.WithTimeout(ctx, time.Millisecond)
	defer dcancel()
	time.Sleep(2 * time.Millisecond)
	if _, err := c.UnaryCall(dctx, &testgrpc.SimpleRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("past its deadline: %v", err)
	}

	// sidekey's own answers carry gRPC statuses: a route that cannot speak
	// HTTP/2 is UNAVAILABLE, no route UNIMPLEMENTED.
	if err := cc.Invoke(ctx, "/grpc.testing.UnimplementedService/UnimplementedCall", &testgrpc.Empty{}, &testgrpc.Empty{}); status.Code(err) != codes.Unavailable {
		t.Errorf("a gRPC call to an http1 route: %v", err)
	}
	if err := cc.Invoke(ctx, "/no.Such/Call", &testgrpc.Empty{}, &testgrpc.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("a gRPC call to no route: %v", err)
	}
	if up.refused.Load() != 0 {
		t.Errorf("the upstream refused %d calls", up.refused.Load())
	}
}

// The credential missing: UNAVAILABLE, and the call never reaches the
// upstream. A rotated token makes the upstream answer UNAUTHENTICATED, on
// which sidekey refreshes and sends a small unary call once more.
func TestGRPCCredential(t *testing.T) {
	up, addr := startGRPCUpstream(t, "tok-1")
	e := &env{}
	c, _ := grpcThrough(t, e, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "credential_unavailable") {
		t.Fatalf("without a credential: %v", err)
	}
	if up.calls.Load()+up.refused.Load() != 0 {
		t.Fatal("a call without its credential reached the upstream")
	}
	e.set("TOKEN", "tok-1")
	var resp *testgrpc.SimpleResponse
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("with the credential: %v", err)
	}
	if string(resp.Payload.Body) != "x" {
		t.Fatalf("payload %q", resp.Payload.Body)
	}
	// The upstream moves to a new token; the holder's source already has it.
	tok2 := "tok-2"
	up.token.Store(&tok2)
	e.set("TOKEN", "tok-2")
	before := up.refused.Load()
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("again")}}); err != nil {
		t.Fatalf("after the upstream rotated: %v", err)
	}
	if up.refused.Load() != before+1 {
		t.Errorf("the upstream refused %d calls, want one (then the retry with the new token)", up.refused.Load()-before)
	}
}
