package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestGRPCCallKinds: grpc-go on both sides of the built binary, the
// upstream over h2c and over TLS (h2) with the route pinning the test CA
// that issued its certificate. All four kinds of call pass, each admitted
// by the upstream's interceptors only with the injected token (the app's
// own Authorization replaced); headers, trailers and the upstream's error
// codes reach the client. A route to the TLS upstream without the pinned
// CA fails verification: UNAVAILABLE, and the upstream sees nothing. A
// method no route matches is UNIMPLEMENTED.
func TestGRPCCallKinds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tls   bool
		extra func(u *grpcUpstream) []string
	}{
		{"h2c", false, func(*grpcUpstream) []string { return []string{"protocol: h2c"} }},
		{"h2 with a pinned CA", true, func(u *grpcUpstream) []string {
			return []string{"protocol: h2", "upstream_tls: {ca: " + quote("file:"+u.CAFile) + "}"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := dataDir(t)
			tok := secretValue(t)
			credFile := filepath.Join(dir, "token")
			writeSecretFile(t, credFile, tok)
			up := newGRPCUpstream(t, dir, tc.tls, func(s string) bool { return s == tok })
			routes := []route{{name: "grpc", prefix: grpcService, upstream: up.URL,
				inject: "{credential: tok, as: bearer}", extra: tc.extra(up)}}
			if tc.tls {
				routes = append(routes, route{name: "unpinned", prefix: "/unpinned/", strip: true, upstream: up.URL,
					inject: "{credential: tok, as: bearer}", extra: []string{"protocol: h2"}})
			}
			p := startSidekey(t, configYAML(nil, []string{fileCred("tok", credFile)}, routes))
			cc, c := grpcClient(t, p)
			waitGRPC(t, c)
			grpcCallKinds(t, c, up)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			before := up.unary.Load() + up.streams.Load() + up.refused.Load()
			err := cc.Invoke(appContext(ctx), "/no.such.Service/Call", &testgrpc.Empty{}, &testgrpc.Empty{})
			captureGRPC(t, "no route", err)
			if status.Code(err) != codes.Unimplemented {
				t.Errorf("a method no route matches: %v, want UNIMPLEMENTED", err)
			}
			if tc.tls {
				err := cc.Invoke(appContext(ctx), "/unpinned"+grpcService+"UnaryCall", &testgrpc.SimpleRequest{}, &testgrpc.SimpleResponse{})
				captureGRPC(t, "unpinned", err)
				if status.Code(err) != codes.Unavailable {
					t.Errorf("a route to the TLS upstream without the pinned CA: %v, want UNAVAILABLE", err)
				}
			}
			if n := up.unary.Load() + up.streams.Load() + up.refused.Load(); n != before {
				t.Errorf("the upstream saw %d calls that sidekey should have answered itself", n-before)
			}
			if n := up.refused.Load(); n != 0 {
				t.Errorf("the upstream's interceptors refused %d calls", n)
			}
			if _, err := p.waitLog(5*time.Second, func(e map[string]any) bool {
				return e["msg"] == "request" && e["route"] == "grpc" && e["protocol"] == "HTTP/2.0" && e["status"] == float64(200)
			}); err != nil {
				t.Errorf("no audit line for a gRPC call over HTTP/2: %v", err)
			}
		})
	}
}

// grpcCallKinds makes one call of each kind and checks what comes back
// and that the upstream's interceptors admitted each.
func grpcCallKinds(t *testing.T, c testgrpc.TestServiceClient, up *grpcUpstream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(appContext(context.Background()), 30*time.Second)
	defer cancel()
	unary0, streams0 := up.unary.Load(), up.streams.Load()

	var header, trailer metadata.MD
	resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}},
		grpc.Header(&header), grpc.Trailer(&trailer))
	captureGRPC(t, "unary", err, header, trailer)
	if err != nil || string(resp.GetPayload().GetBody()) != "ping" {
		t.Fatalf("unary: %v %v", resp, err)
	}
	if got := header.Get("x-upstream-header"); !slices.Equal(got, []string{"h"}) {
		t.Errorf("unary: header x-upstream-header %q, want [h]", got)
	}
	if got := trailer.Get("x-upstream-trailer"); !slices.Equal(got, []string{"t"}) {
		t.Errorf("unary: trailer x-upstream-trailer %q, want [t]", got)
	}

	// The upstream's error: its code, message and trailer reach the client.
	trailer = nil
	_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{
		Code: int32(codes.FailedPrecondition), Message: "not yet"}}, grpc.Trailer(&trailer))
	captureGRPC(t, "unary error", err, trailer)
	if status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != "not yet" {
		t.Errorf("upstream error: %v, want FAILED_PRECONDITION \"not yet\"", err)
	}
	if got := trailer.Get("x-upstream-trailer"); !slices.Equal(got, []string{"t"}) {
		t.Errorf("upstream error: trailer x-upstream-trailer %q, want [t]", got)
	}

	// Server streaming, one message larger than the HTTP/2 frame and
	// window sizes.
	ss, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}, {Size: 300_000}, {Size: 1}}})
	if err != nil {
		t.Fatalf("server streaming: %v", err)
	}
	var sizes []int
	for {
		m, err := ss.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("server streaming: %v", err)
		}
		sizes = append(sizes, len(m.GetPayload().GetBody()))
	}
	captureGRPC(t, "server streaming", nil, ss.Trailer())
	if !slices.Equal(sizes, []int{10, 300_000, 1}) {
		t.Errorf("server streaming: message sizes %v", sizes)
	}
	if got := ss.Trailer().Get("x-upstream-trailer"); !slices.Equal(got, []string{"t"}) {
		t.Errorf("server streaming: trailer %q", got)
	}

	// Client streaming.
	cs, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatalf("client streaming: %v", err)
	}
	for _, n := range []int{1000, 20_000, 200_000} {
		if err := cs.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatalf("client streaming: %v", err)
		}
	}
	agg, err := cs.CloseAndRecv()
	captureGRPC(t, "client streaming", err, cs.Trailer())
	if err != nil || agg.GetAggregatedPayloadSize() != 221_000 {
		t.Errorf("client streaming: %v %v, want 221000 bytes", agg, err)
	}

	// Bidirectional: each answer arrives before the next message is sent,
	// so both directions are open at once through sidekey.
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("bidi: %v", err)
	}
	for i := range 10 {
		msg := []byte(fmt.Sprintf("message %d", i))
		if err := bs.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: msg}}); err != nil {
			t.Fatalf("bidi send %d: %v", i, err)
		}
		r, err := bs.Recv()
		if err != nil || string(r.GetPayload().GetBody()) != string(msg) {
			t.Fatalf("bidi %d: %v %v", i, r, err)
		}
	}
	if err := bs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Recv(); err != io.EOF {
		t.Errorf("bidi end: %v, want EOF", err)
	}
	captureGRPC(t, "bidi", nil, bs.Trailer())
	if got := bs.Trailer().Get("x-upstream-trailer"); !slices.Equal(got, []string{"t"}) {
		t.Errorf("bidi: trailer %q", got)
	}

	if n := up.unary.Load() - unary0; n != 2 {
		t.Errorf("the unary interceptor admitted %d calls, want 2", n)
	}
	if n := up.streams.Load() - streams0; n != 3 {
		t.Errorf("the stream interceptor admitted %d calls, want 3", n)
	}
}

// TestGRPCDeadlines: the client's deadline travels through sidekey
// (grpc-timeout): the upstream's call ends with it, long before the
// route's timeout. The route's timeout, when the upstream stalls without
// answering, ends the call with DEADLINE_EXCEEDED (sidekey's own answer,
// upstream_timeout) and cancels the upstream's call.
func TestGRPCDeadlines(t *testing.T) {
	dir := dataDir(t)
	tok := secretValue(t)
	credFile := filepath.Join(dir, "token")
	writeSecretFile(t, credFile, tok)
	up := newGRPCUpstream(t, dir, false, func(s string) bool { return s == tok })
	p := startSidekey(t, configYAML(nil, []string{fileCred("tok", credFile)}, []route{
		{name: "grpc", prefix: grpcService, upstream: up.URL, inject: "{credential: tok, as: bearer}",
			timeout: "60s", extra: []string{"protocol: h2c"}},
		{name: "short", prefix: "/short/", strip: true, upstream: up.URL, inject: "{credential: tok, as: bearer}",
			timeout: "1s", extra: []string{"protocol: h2c"}},
	}))
	cc, c := grpcClient(t, p)
	waitGRPC(t, c)
	stall := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(stallBody)}}

	t.Run("client deadline", func(t *testing.T) {
		const deadline = 500 * time.Millisecond
		ctx, cancel := context.WithTimeout(appContext(context.Background()), deadline)
		defer cancel()
		start := time.Now()
		_, err := c.UnaryCall(ctx, stall)
		captureGRPC(t, "past the client's deadline", err)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("past the client's deadline: %v, want DEADLINE_EXCEEDED", err)
		}
		s, ok := up.nextStall(t, 10*time.Second)
		if !ok {
			t.Fatal("the upstream's call did not end within 10s of the client's deadline (the route timeout is 60s)")
		}
		// The upstream counts the grpc-timeout from when the call reached
		// it: the client's deadline, give or take the way there.
		if s.deadline.IsZero() || s.deadline.After(start.Add(deadline+2*time.Second)) {
			t.Errorf("the upstream's call had deadline %v after the call began, want about %v", s.deadline.Sub(start), deadline)
		}
		if !errors.Is(s.err, context.DeadlineExceeded) && !errors.Is(s.err, context.Canceled) {
			t.Errorf("the upstream's call ended with %v", s.err)
		}
		t.Logf("the upstream's call ended %v after the client's call began", s.ended.Sub(start).Round(time.Millisecond))
	})

	t.Run("route timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(appContext(context.Background()), 30*time.Second)
		defer cancel()
		start := time.Now()
		var trailer metadata.MD
		err := cc.Invoke(ctx, "/short"+grpcService+"UnaryCall", stall, &testgrpc.SimpleResponse{}, grpc.Trailer(&trailer))
		took := time.Since(start)
		captureGRPC(t, "past the route timeout", err, trailer)
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(status.Convert(err).Message(), "upstream_timeout") {
			t.Errorf("past the route timeout: %v, want DEADLINE_EXCEEDED upstream_timeout", err)
		}
		if took < time.Second || took > 10*time.Second {
			t.Errorf("answered after %v, want the route timeout of 1s", took)
		}
		s, ok := up.nextStall(t, 10*time.Second)
		if !ok {
			t.Fatal("the upstream's call was not cancelled within 10s of the route timeout")
		}
		if !errors.Is(s.err, context.Canceled) {
			t.Errorf("the upstream's call ended with %v, want cancelled", s.err)
		}
		if !s.deadline.IsZero() && s.deadline.Before(start.Add(20*time.Second)) {
			t.Errorf("the upstream's call had a deadline %v after it began; the client's is 30s", s.deadline.Sub(start))
		}
		t.Logf("answered after %v; the upstream's call was cancelled %v after it began", took.Round(time.Millisecond), s.ended.Sub(start).Round(time.Millisecond))
	})

	t.Run("client cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(appContext(context.Background()))
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := c.UnaryCall(ctx, stall)
			done <- err
		}()
		// The call is at the upstream once the unary interceptor admitted it.
		n := up.unary.Load()
		eventually(t, 10*time.Second, "the stalled call reaches the upstream", func() error {
			if up.unary.Load() == n {
				return errors.New("not yet")
			}
			return nil
		})
		cancel()
		if err := <-done; status.Code(err) != codes.Canceled {
			t.Errorf("a cancelled call: %v, want CANCELED", err)
		}
		s, ok := up.nextStall(t, 10*time.Second)
		if !ok {
			t.Fatal("the upstream's call went on for 10s after the client cancelled it (the route timeout is 60s)")
		}
		t.Logf("the upstream's call ended %v after the client's call began", s.ended.Sub(start).Round(time.Millisecond))
	})
}

// TestGRPCMissingCredential: a credential that cannot be read makes every
// call UNAVAILABLE, naming the credential, and none reaches the upstream;
// once the file appears, calls go through.
func TestGRPCMissingCredential(t *testing.T) {
	dir := dataDir(t)
	tok := secretValue(t)
	credFile := filepath.Join(dir, "token")
	up := newGRPCUpstream(t, dir, false, func(s string) bool { return s == tok })
	p := startSidekey(t, configYAML(nil, []string{fileCred("tok", credFile)}, []route{
		{name: "grpc", prefix: grpcService, upstream: up.URL, inject: "{credential: tok, as: bearer}", extra: []string{"protocol: h2c"}},
	}))
	_, c := grpcClient(t, p)
	ctx, cancel := context.WithTimeout(appContext(context.Background()), 20*time.Second)
	defer cancel()

	var trailer metadata.MD
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}, grpc.Trailer(&trailer))
	captureGRPC(t, "unary without the credential", err, trailer)
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "credential_unavailable: tok" {
		t.Errorf("unary without the credential: %v, want UNAVAILABLE \"credential_unavailable: tok\"", err)
	}
	ss, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}}})
	if err == nil {
		_, err = ss.Recv()
	}
	captureGRPC(t, "stream without the credential", err)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "credential_unavailable") {
		t.Errorf("server streaming without the credential: %v, want UNAVAILABLE", err)
	}
	bs, err := c.FullDuplexCall(ctx)
	if err == nil {
		_ = bs.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}})
		_, err = bs.Recv()
	}
	captureGRPC(t, "bidi without the credential", err)
	if status.Code(err) != codes.Unavailable {
		t.Errorf("bidi without the credential: %v, want UNAVAILABLE", err)
	}
	if n := up.unary.Load() + up.streams.Load() + up.refused.Load(); n != 0 {
		t.Fatalf("%d calls reached the upstream without the credential", n)
	}

	writeSecretFile(t, credFile, tok)
	waitGRPC(t, c)
	if up.refused.Load() != 0 {
		t.Errorf("the upstream refused %d calls", up.refused.Load())
	}
}

// TestGRPCFileRotationUnderLoad is TestFileRotationUnderLoad over HTTP/2:
// the file credential is replaced by rename every 100 ms for 10 s while
// 32 callers, 8 on each of 4 HTTP/2 connections, call continuously
// (unary calls, every eighth a bidirectional stream). The upstream's
// interceptors accept only the last 10 tokens issued, each added before
// its rename. No call may fail, and the last token must reach the upstream.
func TestGRPCFileRotationUnderLoad(t *testing.T) {
	const (
		rotations = 100
		every     = 100 * time.Millisecond
		conns     = 4
		perConn   = 8
		accepted  = 10
	)
	dir := dataDir(t)
	credFile := filepath.Join(dir, "token")
	ring := newTokenRing(accepted)
	first := secretValue(t)
	ring.add(first)
	writeSecretFile(t, credFile, first)
	up := newGRPCUpstream(t, dir, false, ring.accept)
	p := startSidekey(t, configYAML(nil, []string{fileCred("tok", credFile)}, []route{
		{name: "grpc", prefix: grpcService, upstream: up.URL, inject: "{credential: tok, as: bearer}", extra: []string{"protocol: h2c"}},
	}))
	clients := make([]testgrpc.TestServiceClient, conns)
	for i := range clients {
		_, clients[i] = grpcClient(t, p)
	}
	waitGRPC(t, clients[0])

	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		okCount   atomic.Int64
		failCount atomic.Int64
		failMu    sync.Mutex
		failures  []string
	)
	fail := func(err error) {
		failCount.Add(1)
		failMu.Lock()
		if len(failures) < 5 {
			failures = append(failures, err.Error())
		}
		failMu.Unlock()
	}
	for i := range conns * perConn {
		c := clients[i%conns]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if n%8 == 7 {
					err = rotationStream(c)
				} else {
					err = rotationUnary(c)
				}
				if err != nil {
					captureGRPC(t, "call during rotation", err)
					fail(err)
					continue
				}
				okCount.Add(1)
			}
		}()
	}

	type rename struct {
		token string
		at    time.Time
	}
	var renames []rename
	ticker := time.NewTicker(every)
	for range rotations {
		<-ticker.C
		tok := secretValue(t)
		ring.add(tok)
		if err := replaceFile(credFile, tok); err != nil {
			t.Errorf("rotating the file: %v", err)
			break
		}
		renames = append(renames, rename{tok, time.Now()})
	}
	ticker.Stop()
	last := renames[len(renames)-1].token
	eventually(t, 5*time.Second, "the last token reaches the upstream", func() error {
		if _, ok := ring.seen(last); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	close(stop)
	wg.Wait()

	t.Logf("%d calls succeeded, %d failed, %d rotations; the upstream refused %d calls (each then retried by sidekey, or failed)",
		okCount.Load(), failCount.Load(), len(renames), up.refused.Load())
	if n := failCount.Load(); n > 0 {
		t.Errorf("%d calls failed during rotation; first: %q", n, failures)
	}
	var lags []time.Duration
	unseen := 0
	for _, r := range renames {
		at, ok := ring.seen(r.token)
		if !ok {
			unseen++
			continue
		}
		lags = append(lags, max(at.Sub(r.at), 0))
	}
	if len(lags) > 0 {
		slices.Sort(lags)
		t.Logf("rotation lag over %d tokens (%d replaced before any call carried them): p50 %v, p99 %v, max %v", len(lags), unseen,
			lags[len(lags)/2].Round(time.Microsecond), lags[len(lags)*99/100].Round(time.Microsecond), lags[len(lags)-1].Round(time.Microsecond))
	}
}

func rotationUnary(c testgrpc.TestServiceClient) error {
	ctx, cancel := context.WithTimeout(appContext(context.Background()), 20*time.Second)
	defer cancel()
	resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("rot")}})
	if err != nil {
		return fmt.Errorf("unary: %w", err)
	}
	if string(resp.GetPayload().GetBody()) != "rot" {
		return fmt.Errorf("unary: payload %q", resp.GetPayload().GetBody())
	}
	return nil
}

func rotationStream(c testgrpc.TestServiceClient) error {
	ctx, cancel := context.WithTimeout(appContext(context.Background()), 20*time.Second)
	defer cancel()
	bs, err := c.FullDuplexCall(ctx)
	if err != nil {
		return fmt.Errorf("bidi: %w", err)
	}
	for i := range 2 {
		if err := bs.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte{byte(i)}}}); err != nil {
			_, rerr := bs.Recv()
			return fmt.Errorf("bidi send: %w (%v)", err, rerr)
		}
		if _, err := bs.Recv(); err != nil {
			return fmt.Errorf("bidi: %w", err)
		}
	}
	if err := bs.CloseSend(); err != nil {
		return err
	}
	if _, err := bs.Recv(); err != io.EOF {
		return fmt.Errorf("bidi end: %v", err)
	}
	return nil
}
