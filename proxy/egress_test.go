package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestGuardAddressTable(t *testing.T) {
	tests := []struct {
		addr  string
		class string // "" when reachable
	}{
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"0.0.0.0", "unspecified"},
		{"0.255.255.255", "unspecified"},
		{"1.0.0.0", ""},
		{"9.255.255.255", ""},
		{"10.0.0.0", "private"},
		{"10.255.255.255", "private"},
		{"11.0.0.0", ""},
		{"100.63.255.255", ""},
		{"100.64.0.0", "cgnat"},
		{"100.100.100.200", "cgnat"},
		{"100.127.255.255", "cgnat"},
		{"100.128.0.0", ""},
		{"126.255.255.255", ""},
		{"127.0.0.0", "loopback"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.255", "loopback"},
		{"128.0.0.0", ""},
		{"169.253.255.255", ""},
		{"169.254.0.0", "link-local"},
		{"169.254.169.254", "link-local"},
		{"169.254.255.255", "link-local"},
		{"169.255.0.0", ""},
		{"172.15.255.255", ""},
		{"172.16.0.0", "private"},
		{"172.31.255.255", "private"},
		{"172.32.0.0", ""},
		{"191.255.255.255", ""},
		{"192.0.0.0", "reserved"},
		{"192.0.0.255", "reserved"},
		{"192.0.1.0", ""},
		{"192.0.2.1", "documentation"},
		{"192.88.99.1", "reserved"},
		{"192.167.255.255", ""},
		{"192.168.0.0", "private"},
		{"192.168.255.255", "private"},
		{"192.169.0.0", ""},
		{"198.17.255.255", ""},
		{"198.18.0.0", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"198.20.0.0", ""},
		{"198.51.100.7", "documentation"},
		{"203.0.113.7", "documentation"},
		{"223.255.255.255", ""},
		{"224.0.0.0", "multicast"},
		{"239.255.255.255", "multicast"},
		{"240.0.0.0", "reserved"},
		{"255.255.255.255", "reserved"},

		// IPv4-mapped: judged, and dialled, as the IPv4 address.
		{"::ffff:8.8.8.8", ""},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:10.1.2.3", "private"},
		{"::ffff:169.254.169.254", "link-local"},
		{"::ffff:0.0.0.0", "unspecified"},

		{"2606:4700:4700::1111", ""},
		{"2001:4860:4860::8888", ""},
		{"2001:200::1", ""}, // just past 2001::/23
		{"::", "unspecified"},
		{"::1", "loopback"},
		{"::2", "reserved"},
		{"::127.0.0.1", "reserved"}, // IPv4-compatible, deprecated
		{"100::1", "reserved"},
		{"1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"}, // just below 2000::/3
		{"4000::", "reserved"},                                  // just above
		{"fc00::", "private"},
		{"fd00:ec2::254", "private"}, // AWS metadata over IPv6
		{"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "private"},
		{"fe80::1", "link-local"},
		{"febf:ffff::1", "link-local"},
		{"fec0::1", "reserved"}, // old site-local
		{"ff02::1", "multicast"},
		{"2001::1", "reserved"}, // Teredo
		{"2001:1ff:ffff::1", "reserved"},
		{"2001:2::1", "reserved"}, // benchmarking
		{"2001:db8::1", "documentation"},
		{"2001:db9::1", ""},
		{"2002:808:808::1", "6to4"},
		{"2002:a00:1::1", "6to4"},
		{"3fff::1", "documentation"},
		{"3fff:1000::1", ""},

		// NAT64, well-known prefix: judged by the IPv4 address inside.
		{"64:ff9b::8.8.8.8", ""},
		{"64:ff9b::10.0.0.1", "nat64 private"},
		{"64:ff9b::127.0.0.1", "nat64 loopback"},
		{"64:ff9b::169.254.169.254", "nat64 link-local"},
		{"64:ff9b:1::8.8.8.8", "reserved"}, // local-use NAT64: its embedding is the network's own
	}
	var g egressGuard
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		got, err := g.check(a)
		var fe *forbiddenError
		switch {
		case tt.class == "" && err != nil:
			t.Errorf("%s: %v, want reachable", tt.addr, err)
		case tt.class == "" && got != a.Unmap():
			t.Errorf("%s: dials %v, want %v", tt.addr, got, a.Unmap())
		case tt.class != "" && !errors.As(err, &fe):
			t.Errorf("%s: %v, want forbidden as %s", tt.addr, err, tt.class)
		case tt.class != "" && (fe.class != tt.class || fe.addr != a.Unmap() || !errors.Is(err, errDestinationForbidden)):
			t.Errorf("%s: %v (class %q, addr %v), want class %q", tt.addr, err, fe.class, fe.addr, tt.class)
		}
	}
	if _, err := g.check(netip.Addr{}); !errors.Is(err, errDestinationForbidden) {
		t.Errorf("the zero address: %v", err)
	}
}

func TestGuardAllowAddresses(t *testing.T) {
	g := egressGuard{allow: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("169.254.169.254/32"),
	}}
	tests := []struct {
		addr, dial string // dial "" when refused
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.255.255.255", "127.255.255.255"},
		{"::ffff:127.0.0.1", "127.0.0.1"},
		{"10.1.2.3", "10.1.2.3"},
		{"10.1.255.255", "10.1.255.255"},
		{"10.2.0.0", ""},
		{"10.0.255.255", ""},
		{"::ffff:10.2.0.1", ""},
		{"64:ff9b::10.1.0.1", "64:ff9b::a01:1"}, // NAT64 of a listed IPv4 address
		{"64:ff9b::10.2.0.1", ""},
		{"fd00::1", "fd00::1"},
		{"fe80::1", ""},
		{"::1", ""}, // 127.0.0.0/8 does not cover IPv6 loopback
		{"169.254.169.254", "169.254.169.254"},
		{"169.254.169.253", ""},
		{"192.168.1.1", ""},
		{"8.8.8.8", "8.8.8.8"},
	}
	for _, tt := range tests {
		got, err := g.check(netip.MustParseAddr(tt.addr))
		switch {
		case tt.dial == "" && !errors.Is(err, errDestinationForbidden):
			t.Errorf("%s: %v, %v; want refused", tt.addr, got, err)
		case tt.dial != "" && (err != nil || got.String() != tt.dial):
			t.Errorf("%s: %v, %v; want %s", tt.addr, got, err, tt.dial)
		}
	}
}

// loopbackListener is a real listener on 127.0.0.1 whose accepted
// connections arrive on a channel.
type loopbackListener struct {
	net.Listener
	accepted chan net.Conn
}

func newLoopbackListener(t *testing.T) *loopbackListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &loopbackListener{ln, make(chan net.Conn, 8)}
	go func() {
		defer close(l.accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range l.accepted {
			c.Close()
		}
	})
	return l
}

func (l *loopbackListener) port() int { return l.Addr().(*net.TCPAddr).Port }

// assertNothingConnected proves that no connection reached the listener: it
// connects itself and checks that its own connection is the first accepted.
// The accept queue is first in, first out, so anything the guard had let
// through would be accepted before it.
func (l *loopbackListener) assertNothingConnected(t *testing.T) {
	t.Helper()
	probe, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	c := <-l.accepted
	defer c.Close()
	if c.RemoteAddr().String() != probe.LocalAddr().String() {
		t.Fatalf("a connection from %v reached the listener before the probe from %v", c.RemoteAddr(), probe.LocalAddr())
	}
}

// assertConnected checks that conn reached the listener, and carries bytes.
func (l *loopbackListener) assertConnected(t *testing.T, conn net.Conn) {
	t.Helper()
	c := <-l.accepted
	defer c.Close()
	if c.RemoteAddr().String() != conn.LocalAddr().String() {
		t.Fatalf("accepted %v, dialled from %v", c.RemoteAddr(), conn.LocalAddr())
	}
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read %q, %v", buf, err)
	}
}

func TestGuardLoopbackLiteral(t *testing.T) {
	l := newLoopbackListener(t)
	tg, err := parseConnectTarget(net.JoinHostPort("127.0.0.1", strconv.Itoa(l.port())))
	if err != nil {
		t.Fatal(err)
	}

	var refused egressGuard
	conn, err := refused.dial(context.Background(), tg)
	if !errors.Is(err, errDestinationForbidden) {
		t.Fatalf("dial without allow_addresses: %v, %v; want errDestinationForbidden", conn, err)
	}
	l.assertNothingConnected(t)

	allowed := egressGuard{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	conn, err = allowed.dial(context.Background(), tg)
	if err != nil {
		t.Fatalf("dial with 127.0.0.0/8 allowed: %v", err)
	}
	defer conn.Close()
	l.assertConnected(t, conn)
}

// The default wiring: net.DefaultResolver and a net.Dialer. "localhost"
// resolves to loopback (here as ::ffff:127.0.0.1, which Go's resolver returns
// for the hosts file's IPv4 entry) and is refused until listed.
func TestGuardLocalhostDefaultResolver(t *testing.T) {
	l := newLoopbackListener(t)
	tg, err := parseConnectTarget(net.JoinHostPort("localhost", strconv.Itoa(l.port())))
	if err != nil {
		t.Fatal(err)
	}

	var refused egressGuard
	_, err = refused.dial(context.Background(), tg)
	var fe *forbiddenError
	if !errors.As(err, &fe) || fe.class != "loopback" {
		t.Fatalf("dial localhost: %v; want forbidden as loopback", err)
	}
	l.assertNothingConnected(t)

	allowed := egressGuard{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	conn, err := allowed.dial(context.Background(), tg)
	if err != nil {
		t.Fatalf("dial localhost with loopback allowed: %v", err)
	}
	defer conn.Close()
	l.assertConnected(t, conn)
}

// fakeResolver answers each lookup from answer, counting the calls.
type fakeResolver struct {
	t      *testing.T
	answer func(call int, host string) ([]netip.Addr, error)
	mu     sync.Mutex
	calls  int
}

func (r *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.calls++
	call := r.calls
	r.mu.Unlock()
	if network != "ip" {
		r.t.Errorf("lookup %s over %q, want \"ip\"", host, network)
	}
	return r.answer(call, host)
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func answers(addrs ...string) func(int, string) ([]netip.Addr, error) {
	return func(int, string) ([]netip.Addr, error) {
		out := make([]netip.Addr, len(addrs))
		for i, a := range addrs {
			out[i] = netip.MustParseAddr(a)
		}
		return out, nil
	}
}

// recordingDialer records what it is asked to dial instead of connecting
// (this machine reaches only loopback); refuse names addresses it fails
// with ECONNREFUSED.
type recordingDialer struct {
	mu        sync.Mutex
	dialled   []string
	deadlines []time.Time
	refuse    map[string]bool
}

func (d *recordingDialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if network != "tcp" {
		return nil, fmt.Errorf("network %q", network)
	}
	d.dialled = append(d.dialled, address)
	dl, _ := ctx.Deadline()
	d.deadlines = append(d.deadlines, dl)
	if d.refuse[address] {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	c, peer := net.Pipe()
	peer.Close()
	return c, nil
}

func (d *recordingDialer) addresses() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialled...)
}

func mustTarget(t *testing.T, s string) target {
	t.Helper()
	tg, err := parseConnectTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestGuardNameToLoopbackRefused(t *testing.T) {
	for _, addrs := range [][]string{{"127.0.0.1"}, {"::1"}, {"::ffff:127.0.0.2"}, {"169.254.169.254"}, {"0.0.0.0"}} {
		r := &fakeResolver{t: t, answer: answers(addrs...)}
		d := &recordingDialer{}
		g := egressGuard{resolver: r, dialer: d.dial}
		_, err := g.dial(context.Background(), mustTarget(t, "innocent.example.com:443"))
		if !errors.Is(err, errDestinationForbidden) {
			t.Errorf("%v: %v, want errDestinationForbidden", addrs, err)
		}
		if got := d.addresses(); len(got) != 0 {
			t.Errorf("%v: dialled %v", addrs, got)
		}
	}
}

// DNS rebinding: the name answers a public address first and loopback after.
// The guard looks it up once and dials the address it checked.
func TestGuardDNSRebinding(t *testing.T) {
	r := &fakeResolver{t: t, answer: func(call int, host string) ([]netip.Addr, error) {
		if call == 1 {
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}}
	d := &recordingDialer{}
	g := egressGuard{resolver: r, dialer: d.dial}
	conn, err := g.dial(context.Background(), mustTarget(t, "rebind.example.com:443"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if n := r.count(); n != 1 {
		t.Errorf("resolver called %d times, want 1", n)
	}
	if got := d.addresses(); len(got) != 1 || got[0] != "93.184.215.14:443" {
		t.Errorf("dialled %v, want [93.184.215.14:443]", got)
	}
}

// One forbidden address among public ones refuses the destination: nothing
// is dialled, whatever the order.
func TestGuardMixedAnswerRefused(t *testing.T) {
	for _, addrs := range [][]string{
		{"93.184.215.14", "10.0.0.1"},
		{"10.0.0.1", "93.184.215.14"},
		{"2606:4700::1", "93.184.215.14", "fd00::1"},
		{"93.184.215.14", "::ffff:192.168.0.1"},
	} {
		r := &fakeResolver{t: t, answer: answers(addrs...)}
		d := &recordingDialer{}
		g := egressGuard{resolver: r, dialer: d.dial}
		_, err := g.dial(context.Background(), mustTarget(t, "mixed.example.com:443"))
		var fe *forbiddenError
		if !errors.As(err, &fe) || fe.class != "private" {
			t.Errorf("%v: %v, want forbidden as private", addrs, err)
		}
		if got := d.addresses(); len(got) != 0 {
			t.Errorf("%v: dialled %v", addrs, got)
		}
	}
}

// Several permitted addresses are tried in order until one connects, each
// within its share of the time; each is dialled as the literal address.
func TestGuardFallsBackAcrossAddresses(t *testing.T) {
	r := &fakeResolver{t: t, answer: answers("2606:4700::1", "::ffff:93.184.215.14", "93.184.215.15")}
	d := &recordingDialer{refuse: map[string]bool{"[2606:4700::1]:8443": true}}
	g := egressGuard{resolver: r, dialer: d.dial, timeout: 30 * time.Second}
	start := time.Now()
	conn, err := g.dial(context.Background(), mustTarget(t, "multi.example.com:8443"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	want := []string{"[2606:4700::1]:8443", "93.184.215.14:8443"}
	if got := d.addresses(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("dialled %v, want %v", got, want)
	}
	first, second := d.deadlines[0], d.deadlines[1]
	if first.IsZero() || second.IsZero() || !first.Before(second) || second.After(start.Add(30*time.Second+time.Second)) {
		t.Errorf("attempt deadlines %v, %v: want the first a share of the second, within 30s of %v", first, second, start)
	}
}

func TestGuardAllAddressesFail(t *testing.T) {
	r := &fakeResolver{t: t, answer: answers("93.184.215.14", "93.184.215.15")}
	d := &recordingDialer{refuse: map[string]bool{"93.184.215.14:443": true, "93.184.215.15:443": true}}
	g := egressGuard{resolver: r, dialer: d.dial}
	_, err := g.dial(context.Background(), mustTarget(t, "down.example.com:443"))
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "93.184.215.14:443") {
		t.Errorf("%v: want the first address's ECONNREFUSED", err)
	}
	if errors.Is(err, errDestinationForbidden) || errors.Is(err, errResolve) {
		t.Errorf("%v: a dial failure is neither a refusal nor a lookup failure", err)
	}
	if got := d.addresses(); len(got) != 2 {
		t.Errorf("dialled %v, want both", got)
	}
}

// An IP literal is checked without a lookup.
func TestGuardLiteralSkipsResolver(t *testing.T) {
	r := &fakeResolver{t: t, answer: answers("93.184.215.14")}
	d := &recordingDialer{}
	g := egressGuard{resolver: r, dialer: d.dial}
	for _, s := range []string{"8.8.8.8:443", "[2606:4700:4700::1111]:443", "[::ffff:8.8.4.4]:443"} {
		conn, err := g.dial(context.Background(), mustTarget(t, s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		conn.Close()
	}
	for _, s := range []string{"10.0.0.1:443", "[::1]:443", "[::ffff:127.0.0.1]:443", "[fe80::1]:443"} {
		if _, err := g.dial(context.Background(), mustTarget(t, s)); !errors.Is(err, errDestinationForbidden) {
			t.Errorf("%s: %v, want errDestinationForbidden", s, err)
		}
	}
	if n := r.count(); n != 0 {
		t.Errorf("resolver called %d times for IP literals", n)
	}
	want := "8.8.8.8:443 [2606:4700:4700::1111]:443 8.8.4.4:443"
	if got := strings.Join(d.addresses(), " "); got != want {
		t.Errorf("dialled %s, want %s", got, want)
	}
}

func TestGuardResolveFailure(t *testing.T) {
	notFound := &net.DNSError{Err: "no such host", Name: "nowhere.example.com", IsNotFound: true}
	tests := []struct {
		name   string
		answer func(int, string) ([]netip.Addr, error)
		is     error
	}{
		{"error", func(int, string) ([]netip.Addr, error) { return nil, notFound }, notFound},
		{"empty", answers(), nil},
	}
	for _, tt := range tests {
		d := &recordingDialer{}
		g := egressGuard{resolver: &fakeResolver{t: t, answer: tt.answer}, dialer: d.dial}
		_, err := g.dial(context.Background(), mustTarget(t, "nowhere.example.com:443"))
		if !errors.Is(err, errResolve) || errors.Is(err, errDestinationForbidden) {
			t.Errorf("%s: %v, want errResolve only", tt.name, err)
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("%s: %v does not wrap %v", tt.name, err, tt.is)
		}
		if got := d.addresses(); len(got) != 0 {
			t.Errorf("%s: dialled %v", tt.name, got)
		}
	}
}

// The guard's timeout bounds the lookup: a resolver that never answers is
// cut off.
func TestGuardTimeoutBoundsLookup(t *testing.T) {
	blocking := resolverFunc(func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	g := egressGuard{resolver: blocking, timeout: 20 * time.Millisecond}
	_, err := g.dial(context.Background(), mustTarget(t, "slow.example.com:443"))
	if !errors.Is(err, errResolve) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v: want errResolve wrapping the deadline", err)
	}
	if status, _ := egressStatus(err); status != fasthttp.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", status)
	}
}

type resolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// The refusal names the address and its range for the log, and nothing of
// the request.
func TestGuardForbiddenErrorText(t *testing.T) {
	g := egressGuard{resolver: &fakeResolver{t: t, answer: answers("::ffff:10.9.8.7")}}
	_, err := g.dial(context.Background(), mustTarget(t, "secret-internal-name.example.com:443"))
	if got, want := fmt.Sprint(err), "destination not allowed: 10.9.8.7 is private"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
}

func TestEgressStatus(t *testing.T) {
	_, badTarget := parseConnectTarget("user@example.com:443")
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{badTarget, fasthttp.StatusBadRequest, codeBadRequest},
		{&forbiddenError{netip.MustParseAddr("10.0.0.1"), "private"}, fasthttp.StatusForbidden, codeDestinationNotAllowed},
		{fmt.Errorf("%w x: %w", errResolve, &net.DNSError{IsNotFound: true}), fasthttp.StatusBadGateway, codeUpstream},
		{fmt.Errorf("%w x: %w", errResolve, &net.DNSError{IsTimeout: true}), fasthttp.StatusGatewayTimeout, codeTimeout},
		{fmt.Errorf("dialing x: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), fasthttp.StatusBadGateway, codeUpstream},
	}
	for _, tt := range tests {
		if status, code := egressStatus(tt.err); status != tt.status || code != tt.code {
			t.Errorf("egressStatus(%v) = %d %s, want %d %s", tt.err, status, code, tt.status, tt.code)
		}
	}
}

func TestEgressAttemptDeadline(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		left      time.Duration
		remaining int
		want      time.Duration
	}{
		{10 * time.Second, 1, 10 * time.Second},
		{10 * time.Second, 2, 5 * time.Second},
		{10 * time.Second, 4, 2500 * time.Millisecond},
		{10 * time.Second, 10, 2 * time.Second}, // the floor
		{time.Second, 3, time.Second},           // the floor, but never past the deadline
		{0, 2, 0},
	}
	for _, tt := range tests {
		if got := attemptDeadline(now, now.Add(tt.left), tt.remaining).Sub(now); got != tt.want {
			t.Errorf("attemptDeadline(%v left, %d addresses) = +%v, want +%v", tt.left, tt.remaining, got, tt.want)
		}
	}
}

// Once the caller gives up, no further address is tried.
func TestGuardStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dialled []string
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		dialled = append(dialled, address)
		cancel()
		return nil, ctx.Err()
	}
	g := egressGuard{resolver: &fakeResolver{t: t, answer: answers("93.184.215.14", "93.184.215.15")}, dialer: dial}
	if _, err := g.dial(ctx, mustTarget(t, "gone.example.com:443")); !errors.Is(err, context.Canceled) {
		t.Errorf("%v: want context.Canceled", err)
	}
	if len(dialled) != 1 {
		t.Errorf("dialled %v after cancellation, want only the first", dialled)
	}
}
