package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcService is the full name of grpc-go's interop TestService, the
// prefix of its methods' paths.
const grpcService = "/grpc.testing.TestService/"

// stallBody is the payload that makes the upstream's UnaryCall wait until
// its call's context ends, and report when.
const stallBody = "stall"

// appAuthorization is the Authorization the app sends with every call;
// sidekey must replace it by the credential (the upstream refuses a call
// with any other value, or with two).
const appAuthorization = "Bearer app-supplied-value-to-be-replaced"

// grpcUpstream is grpc-go's interop TestService behind a unary and a
// stream interceptor that admit a call only when its authorization
// metadata is exactly one "Bearer T" with T accepted. It sets a header and
// a trailer on every call, answers UnaryCall's response_status as a gRPC
// error, and holds a UnaryCall whose payload is stallBody until the call's
// context ends.
type grpcUpstream struct {
	testgrpc.UnimplementedTestServiceServer
	Addr string // 127.0.0.1:port
	URL  string // http://Addr, or https://Addr with TLS
	// CAFile is the PEM file of the CA that issued its certificate (TLS).
	CAFile string

	accept  func(token string) bool
	unary   atomic.Int64 // unary calls admitted
	streams atomic.Int64 // streaming calls admitted
	refused atomic.Int64
	stalls  chan stalled // one per stalled call, when it ends
}

// stalled is what the upstream saw of a stalled call.
type stalled struct {
	began, ended time.Time
	deadline     time.Time // zero: the call had none
	err          error     // the context's
}

// newGRPCUpstream serves the TestService on 127.0.0.1, over h2c, or over
// TLS with a certificate from a CA generated here, its PEM written under
// dir, when tlsOn.
func newGRPCUpstream(t testing.TB, dir string, tlsOn bool, accept func(string) bool) *grpcUpstream {
	t.Helper()
	u := &grpcUpstream{accept: accept, stalls: make(chan stalled, 16)}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(u.unaryAuth), grpc.StreamInterceptor(u.streamAuth)}
	scheme := "http"
	if tlsOn {
		cert, caFile := testCA(t, dir)
		u.CAFile = caFile
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
		scheme = "https"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, u)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	u.Addr = ln.Addr().String()
	u.URL = scheme + "://" + u.Addr
	return u
}

// testCA makes a CA and a certificate it signs for 127.0.0.1 and
// localhost, and writes the CA's PEM to dir.
func testCA(t testing.TB, dir string) (tls.Certificate, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sidekey e2e upstream CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "upstream-ca.pem")
	writeTestFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	return tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}, caFile
}

// check admits a call whose only authorization is an accepted bearer token.
func (u *grpcUpstream) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) == 1 {
		if tok, ok := strings.CutPrefix(auth[0], "Bearer "); ok && u.accept(tok) {
			return nil
		}
	}
	u.refused.Add(1)
	return status.Errorf(codes.Unauthenticated, "%d authorization values, none accepted", len(auth))
}

func (u *grpcUpstream) unaryAuth(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := u.check(ctx); err != nil {
		return nil, err
	}
	u.unary.Add(1)
	return h(ctx, req)
}

func (u *grpcUpstream) streamAuth(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := u.check(ss.Context()); err != nil {
		return err
	}
	u.streams.Add(1)
	return h(srv, ss)
}

// mark sets the header and trailer every answer carries.
func mark(ctx context.Context) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-upstream-header", "h"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-upstream-trailer", "t"))
}

func (u *grpcUpstream) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	mark(ctx)
	if string(in.GetPayload().GetBody()) == stallBody {
		s := stalled{began: time.Now()}
		s.deadline, _ = ctx.Deadline()
		<-ctx.Done()
		s.ended, s.err = time.Now(), ctx.Err()
		u.stalls <- s
		return nil, ctx.Err()
	}
	if st := in.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.Code), st.Message)
	}
	return &testgrpc.SimpleResponse{Payload: in.GetPayload()}, nil
}

func (u *grpcUpstream) StreamingOutputCall(in *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	mark(s.Context())
	for _, p := range in.ResponseParameters {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.Size)}}); err != nil {
			return err
		}
	}
	return nil
}

func (u *grpcUpstream) StreamingInputCall(s grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	mark(s.Context())
	total := 0
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (u *grpcUpstream) FullDuplexCall(s grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	mark(s.Context())
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

// nextStall waits up to limit for the upstream to report a stalled call's end.
func (u *grpcUpstream) nextStall(t testing.TB, limit time.Duration) (stalled, bool) {
	t.Helper()
	select {
	case s := <-u.stalls:
		return s, true
	case <-time.After(limit):
		return stalled{}, false
	}
}

// grpcClient is a gRPC client of sidekey's app listener over h2c.
func grpcClient(t testing.TB, p *proc) (*grpc.ClientConn, testgrpc.TestServiceClient) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+p.ProxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, testgrpc.NewTestServiceClient(cc)
}

// appContext is a call context carrying the app's own Authorization.
func appContext(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", appAuthorization)
}

// captureGRPC keeps what a call returned (error, header and trailer
// metadata) for the secret scan.
func captureGRPC(t testing.TB, what string, err error, mds ...metadata.MD) {
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	for _, md := range mds {
		for k, vs := range md {
			fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(vs, ", "))
		}
	}
	recordCapture(fmt.Sprintf("gRPC %s in %s", what, t.Name()), []byte(b.String()))
}

// waitGRPC calls UnaryCall until it succeeds (the credential has loaded).
func waitGRPC(t testing.TB, c testgrpc.TestServiceClient) {
	t.Helper()
	eventually(t, 15*time.Second, "a unary call through sidekey succeeds", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.UnaryCall(appContext(ctx), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ready")}})
		captureGRPC(t, "ready probe", err)
		return err
	})
}

// tokenRing accepts the last n tokens added. Safe for concurrent use.
type tokenRing struct {
	mu        sync.Mutex
	n         int
	toks      []string
	firstSeen map[string]time.Time
}

func newTokenRing(n int) *tokenRing { return &tokenRing{n: n, firstSeen: map[string]time.Time{}} }

func (r *tokenRing) add(tok string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.toks = append(r.toks, tok)
	if len(r.toks) > r.n {
		r.toks = r.toks[len(r.toks)-r.n:]
	}
}

// accept reports whether tok is one of the last n, noting when each was
// first presented.
func (r *tokenRing) accept(tok string) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.toks {
		if t == tok {
			if _, ok := r.firstSeen[tok]; !ok {
				r.firstSeen[tok] = now
			}
			return true
		}
	}
	return false
}

func (r *tokenRing) seen(tok string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.firstSeen[tok]
	return at, ok
}
