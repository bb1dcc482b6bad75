package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestPayloadIs64Bytes(t *testing.T) {
	if len(payload) != 64 {
		t.Fatalf("payload is %d bytes", len(payload))
	}
}

// TestRun starts the upstream and calls it: only the exact bearer token
// is admitted, a payload of the wrong length is refused, and /_stats
// counts each.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-token", "tok", "-request-body", "4"}, pw, io.Discard)
		pw.Close()
	}()
	var addr, stats string
	line, err := bufio.NewReader(pr).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "listening %s stats %s", &addr, &stats); err != nil || serr != nil {
		t.Fatalf("first line %q: %v %v", line, err, serr)
	}
	addr = addr[:len(addr)-1] // the comma
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	for _, tc := range []struct {
		auth []string
		body string
		want codes.Code
	}{
		{[]string{"Bearer tok"}, "abcd", codes.OK},
		{[]string{"Bearer other"}, "abcd", codes.Unauthenticated},
		{[]string{"Bearer tok", "Bearer tok"}, "abcd", codes.Unauthenticated},
		{nil, "abcd", codes.Unauthenticated},
		{[]string{"Bearer tok"}, "abc", codes.InvalidArgument},
	} {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		for _, a := range tc.auth {
			cctx = metadata.AppendToOutgoingContext(cctx, "authorization", a)
		}
		resp, err := c.UnaryCall(cctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(tc.body)}})
		ccancel()
		if status.Code(err) != tc.want {
			t.Errorf("authorization %q, body %q: %v, want %v", tc.auth, tc.body, err, tc.want)
		}
		if err == nil && len(resp.GetPayload().GetBody()) != 64 {
			t.Errorf("answered %d bytes", len(resp.GetPayload().GetBody()))
		}
	}
	resp, err := http.Get("http://" + stats + "/_stats")
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.OK != 1 || st.Unauthorized != 3 || st.BadBody != 1 {
		t.Errorf("stats %+v (%v), want 1 ok, 3 unauthorized, 1 bad body", st, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit code %d", code)
	}
}
