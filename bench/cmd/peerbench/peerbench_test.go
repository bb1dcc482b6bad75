package main

import (
	"errors"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sidekey/sidekey/config"
)

func TestParseStat(t *testing.T) {
	line := []byte("4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 312 0 0 0 1234 567 8 9 20 0 5 0 100 1000 200\n")
	s, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if s.ppid != 17 || s.utime != 1234 || s.stime != 567 {
		t.Fatalf("parseStat = %+v, want ppid 17, utime 1234, stime 567", s)
	}
	if _, err := parseStat([]byte("12 (short) S 1")); err == nil {
		t.Fatal("parseStat accepted a truncated line")
	}
}

func TestStatusKiB(t *testing.T) {
	status := []byte("Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t   17204 kB\nVmRSS:\t   16000 kB\n")
	if got := statusKiB(status, "VmHWM:"); got != 17204 {
		t.Fatalf("VmHWM = %d, want 17204", got)
	}
	if got := statusKiB(status, "VmSwap:"); got != 0 {
		t.Fatalf("missing field = %d, want 0", got)
	}
}

func TestParseCoreTimes(t *testing.T) {
	stat := []byte("cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 1 4 50 2 1 1 3 7 0\ncpu1 5 0 5 50 0 0 0 0 0 0\n")
	got, err := parseCoreTimes(stat, 0)
	if err != nil {
		t.Fatal(err)
	}
	// user+nice+system+irq+softirq+steal = 5+1+4+1+1+3; idle and iowait
	// are not busy; guest (7) is already in user.
	if got.busy != 15 || got.total != 67 {
		t.Fatalf("cpu0 = %+v, want busy 15, total 67", got)
	}
	if _, err := parseCoreTimes(stat, 5); err == nil {
		t.Fatal("found a core that is not there")
	}
}

func TestParseWrk(t *testing.T) {
	out := []byte("Running 3s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n" +
		`PEERBENCH {"requests":3000,"duration_us":2000000,"bytes":1,"connect":0,"read":1,"write":0,"status":2,"timeout":3,"p50_us":350,"p99_us":2100,"max_us":9000}` +
		"\nRequests/sec: 1500.00\n")
	w, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if w.rate() != 1500 || w.Status != 2 || w.socketErrors() != 4 || w.P99US != 2100 {
		t.Fatalf("parseWrk = %+v", w)
	}
	if _, err := parseWrk([]byte("Requests/sec: 1\n")); err == nil {
		t.Fatal("parseWrk accepted output without a summary")
	}
}

func TestWrkScript(t *testing.T) {
	post := wrkScript(64)
	for _, want := range []string{`wrk.method = "POST"`, `string.rep("x", 64)`, appAuthorization, "done = function"} {
		if !strings.Contains(post, want) {
			t.Errorf("script lacks %q:\n%s", want, post)
		}
	}
	if get := wrkScript(0); strings.Contains(get, "wrk.method") {
		t.Errorf("GET script sets a method:\n%s", get)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{1, 2, 10}, 2},
		{[]float64{1, 2, 3, 10}, 2.5},
	} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is a number")
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.6: "1,000", 46000: "46,000", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestRotate(t *testing.T) {
	s := []string{"a", "b", "c"}
	if got := strings.Join(rotate(s, 1), ""); got != "bca" {
		t.Errorf("rotate by 1 = %s", got)
	}
	if got := strings.Join(rotate(s, 4), ""); got != "bca" {
		t.Errorf("rotate by 4 = %s", got)
	}
	if strings.Join(s, "") != "abc" {
		t.Error("rotate changed its input")
	}
}

func TestOrderKeepsSidekeyBesideItsReferences(t *testing.T) {
	peers := []peer{{name: "nginx"}, {name: peerSidekey}, {name: "haproxy"}, {name: peerSidekeyRotate}, {name: "fasthttp"}}
	names := func(ps []peer) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.name)
		}
		return strings.Join(s, ",")
	}
	want := []string{
		"nginx,fasthttp,sidekey,sidekey-rotate,haproxy",
		"sidekey-rotate,sidekey,fasthttp,haproxy,nginx",
		"haproxy,nginx,fasthttp,sidekey,sidekey-rotate",
		"nginx,sidekey-rotate,sidekey,fasthttp,haproxy",
	}
	for rep, w := range want {
		if got := names(order(peers, rep)); got != w {
			t.Errorf("repeat %d: order %s, want %s", rep, got, w)
		}
	}
	if got := names(order(peers[:3], 1)); got != "sidekey,haproxy,nginx" {
		t.Errorf("sidekey alone: %s", got)
	}
	if got := names(order([]peer{peers[4], peers[0], peers[1]}, 1)); got != "nginx,sidekey,fasthttp" {
		t.Errorf("without the rotating peer: %s", got)
	}
}

func TestOrderKeepsTheForwardPairTogether(t *testing.T) {
	peers := []peer{{name: peerSidekeyFwd}, {name: "nginx"}, {name: peerSidekeyGo}, {name: peerSidekey}, {name: "fasthttp"}}
	names := func(ps []peer) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.name)
		}
		return strings.Join(s, ",")
	}
	want := []string{
		"sidekey-goload,sidekey-forward,nginx,fasthttp,sidekey",
		"nginx,sidekey,fasthttp,sidekey-forward,sidekey-goload",
		"fasthttp,sidekey,sidekey-goload,sidekey-forward,nginx",
	}
	for rep, w := range want {
		if got := names(order(peers, rep)); got != w {
			t.Errorf("repeat %d: order %s, want %s", rep, got, w)
		}
	}
}

func TestReportForward(t *testing.T) {
	o := options{duration: 10 * time.Second, repeats: 2, conns: []int{32}, layouts: []string{layoutCapped}, quota: 50, loadCPU: 1}
	var ps []peer
	for _, p := range peers() {
		if p.goload || p.name == peerSidekey {
			ps = append(ps, p)
		}
	}
	var rs []result
	for rep := range 2 {
		rs = append(rs,
			result{Peer: peerSidekey, Layout: layoutCapped, Conns: 32, Repeat: rep, ReqPerSec: 30000},
			result{Peer: peerSidekeyGo, Layout: layoutCapped, Conns: 32, Repeat: rep, ReqPerSec: 20000 + float64(rep)*1000, CPUPerReqUS: 25, P50US: 1500, P99US: 4000},
			result{Peer: peerSidekeyFwd, Layout: layoutCapped, Conns: 32, Repeat: rep, ReqPerSec: 18000, CPUPerReqUS: 30, P50US: 1700, P99US: 5000})
	}
	md := buildReport(environment{}, o, []*layout{{name: layoutCapped}}, ps, nil, rs).markdown()
	for _, want := range []string{
		"## Forward proxy",
		"| capped | 32 | 20,500 (20,000–21,000) | 18,000 | 0.88× (0.86×–0.90×) | 0.88× | 25.0 / 30.0 | 1.50 / 1.70 | 4.00 / 5.00 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| sidekey app listener (Go load client) |") {
		t.Errorf("a load-client run is in the wrk tables:\n%s", md)
	}
}

func TestPairedRatio(t *testing.T) {
	st := cell{{Repeat: 0, ReqPerSec: 100}, {Repeat: 1, ReqPerSec: 200}, {Repeat: 2, ReqPerSec: 50}}
	rot := cell{{Repeat: 0, ReqPerSec: 99}, {Repeat: 1, ReqPerSec: 190}, {Repeat: 2, ReqPerSec: 50},
		{Repeat: 3, ReqPerSec: 10}} // no static run in repeat 3: not paired
	got := pairedRatio(st, rot)
	if got.n != 3 || got.med != 0.99 || got.min != 0.95 || got.max != 1 {
		t.Errorf("paired ratio = %+v, want median 0.99 of 0.95..1 over 3", got)
	}
	if s := rangeText(got, times); s != "0.99× (0.95×–1.00×)" {
		t.Errorf("rendered %q", s)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"bench/run.sh", "-out", "", "-proxies", "nginx,sidekey", "a b", "it's"})
	want := `bench/run.sh -out '' -proxies nginx,sidekey 'a b' 'it'\''s'`
	if got != want {
		t.Fatalf("shellJoin = %s, want %s", got, want)
	}
}

func TestRecordedCommand(t *testing.T) {
	got := recordedCommand("bench/run.sh", []string{"-via", "bench/run.sh", "-conns", "32,256", "-out", ""})
	if want := "bench/run.sh -conns 32,256 -out ''"; got != want {
		t.Errorf("with -via: %s, want %s", got, want)
	}
	if got, want := recordedCommand("", []string{"-repeats", "1"}), "go run ./bench/cmd/peerbench -repeats 1"; got != want {
		t.Errorf("without -via: %s, want %s", got, want)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-conns", "256,32", "-proxies", "nginx,sidekey", "-layouts", "uncapped"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.conns) != 2 || o.conns[0] != 256 || strings.Join(o.peers, ",") != "sidekey,nginx" || strings.Join(o.layouts, ",") != "uncapped" {
		t.Fatalf("options = %+v", o)
	}
	for _, bad := range [][]string{
		{"-conns", "0"}, {"-proxies", "envoy"}, {"-layouts", "wide"}, {"-proxy-cpu", "1"},
		{"-repeats", "0"}, {"-quota-method", "magic"}, {"stray"},
		{"-window", "50ms"}, {"-window", "4s"}, // fewer than 10 rotations; fewer than 3 windows in 10 s
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) accepted", bad)
		}
	}
	// The window matters only to the run that has windows.
	if _, err := parseOptions([]string{"-proxies", "sidekey-rotate", "-rotate-every", "1s"}, io.Discard); err != nil {
		t.Errorf("a long rotation period without sidekey-alternate: %v", err)
	}
}

func TestMatchCgroupMount(t *testing.T) {
	v1 := "35 26 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu"
	v1both := "35 26 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct"
	acct := "36 26 0:31 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct"
	v2 := "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"
	for _, tc := range []struct {
		line string
		v    cgroupVersion
		want string
	}{
		{v1, cgroupV1, "/sys/fs/cgroup/cpu"},
		{v1both, cgroupV1, "/sys/fs/cgroup/cpu,cpuacct"},
		{acct, cgroupV1, ""},
		{v2, cgroupV2, "/sys/fs/cgroup"},
		{v2, cgroupV1, ""},
		{v1, cgroupV2, ""},
	} {
		got, ok := matchCgroupMount(tc.line, tc.v)
		if !ok {
			got = ""
		}
		if got != tc.want {
			t.Errorf("matchCgroupMount(%q, v%d) = %q, want %q", tc.line, tc.v, got, tc.want)
		}
	}
}

func TestStatField(t *testing.T) {
	if n, ok := statField("nr_periods 10\nnr_throttled 4\nthrottled_time 99\n", "nr_throttled"); !ok || n != 4 {
		t.Fatalf("nr_throttled = %d, %v", n, ok)
	}
}

// TestPeerConfigs writes every peer's configuration and checks the
// settings the comparison depends on; sidekey's must pass its own parser.
func TestPeerConfigs(t *testing.T) {
	want := map[string][]string{
		peerNginx: {"master_process off;", "worker_processes 1;", "keepalive 64;", "proxy_http_version 1.1;",
			`proxy_set_header Connection "";`, `proxy_set_header Authorization "Bearer bench-tok";`, "listen 127.0.0.1:8080;", "server 127.0.0.1:9000;"},
		peerHAProxy: {"nbthread 1", "http-reuse always", `http-request set-header Authorization "Bearer bench-tok"`, "bind 127.0.0.1:8080", "server up 127.0.0.1:9000"},
		peerCaddy:   {"admin off", "auto_https off", "bind 127.0.0.1", "reverse_proxy 127.0.0.1:9000", `header_up Authorization "Bearer bench-tok"`},
		peerGRPCNginx: {"master_process off;", "worker_processes 1;", "listen 127.0.0.1:8080 http2;", "server 127.0.0.1:9000;",
			"keepalive 64;", "grpc_pass grpc://grpcbench;", `grpc_set_header Authorization "Bearer bench-tok";`},
		peerGRPCSidekey: {"protocol: h2c", "upstream: http://127.0.0.1:9000"},
	}
	for _, p := range peers() {
		t.Run(p.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &site{dir: dir, listen: "127.0.0.1:8080", admin: "127.0.0.1:9901", upstream: "127.0.0.1:9000",
				token: "bench-tok", tokenFile: dir + "/token", bin: "/bin/" + p.name, forward: "127.0.0.1:3128"}
			argv, _, err := p.setup(s)
			if err != nil {
				t.Fatal(err)
			}
			if p.name == peerGRPCDirect {
				if argv != nil || readConfig(t, dir) != "" {
					t.Fatalf("the direct row starts %q", argv)
				}
				return
			}
			if argv[0] != s.bin {
				t.Fatalf("argv = %q", argv)
			}
			conf := readConfig(t, dir)
			for _, w := range want[p.name] {
				if !strings.Contains(conf, w) {
					t.Errorf("config lacks %q:\n%s", w, conf)
				}
			}
			if p.goload {
				cfg, err := config.Parse("sidekey.yaml", []byte(conf))
				if err != nil {
					t.Fatalf("sidekey rejects its forward-proxy bench config: %v\n%s", err, conf)
				}
				if cfg.ForwardProxy == nil || cfg.ForwardProxy.Listen != s.forward || len(cfg.Warnings()) > 0 ||
					cfg.Routes[0].Host != forwardHost || s.host != forwardHost {
					t.Errorf("forward proxy %+v, route host %q, warnings %q", cfg.ForwardProxy, cfg.Routes[0].Host, cfg.Warnings())
				}
			}
			if p.name == peerSidekey || p.name == peerSidekeyRotate || p.name == peerGRPCSidekey {
				cfg, err := config.Parse("sidekey.yaml", []byte(conf))
				if err != nil {
					t.Fatalf("sidekey rejects its bench config: %v\n%s", err, conf)
				}
				if !cfg.Log.Requests {
					t.Error("the audit line is off")
				}
				if strings.Contains(conf, s.token) {
					t.Error("the token is in sidekey's config")
				}
			}
		})
	}
}

// readConfig returns the one file a setup wrote, or "" for none.
func readConfig(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			b, err := os.ReadFile(dir + "/" + e.Name())
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
	return ""
}

func TestCheck(t *testing.T) {
	clean := wrkResult{Requests: 1000, DurationUS: 1e6}
	for _, tc := range []struct {
		name string
		w    wrkResult
		up   upStats
		want string // a problem that must be reported; "" for none
	}{
		{"clean", clean, upStats{OK: 1000}, ""},
		{"in flight at the end", clean, upStats{OK: 1003}, ""},
		{"non-2xx", wrkResult{Requests: 1000, DurationUS: 1e6, Status: 5}, upStats{OK: 995}, "5 non-2xx"},
		{"socket errors", wrkResult{Requests: 1000, DurationUS: 1e6, Read: 2}, upStats{OK: 1000}, "2 socket errors"},
		{"upstream 401", clean, upStats{OK: 1000, Unauthorized: 1}, "1 upstream 401s"},
		{"short-circuited", clean, upStats{OK: 10}, "upstream accepted 10 of 1000"},
		{"altered body", clean, upStats{OK: 1000, BadBody: 3}, "3 request bodies altered"},
		{"nothing", wrkResult{}, upStats{}, "no request completed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r result
			r.check(tc.w, tc.up, 32)
			got := strings.Join(r.Problems, "; ")
			if tc.want == "" && got != "" {
				t.Fatalf("problems = %q, want none", got)
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("problems = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReport(t *testing.T) {
	o := options{duration: 10 * time.Second, warmup: 2 * time.Second, repeats: 2, conns: []int{32, 256},
		layouts: []string{layoutCapped, layoutUncapped}, quota: 50, body: 64, rotateEvery: 10 * time.Millisecond,
		command: "bench/run.sh", loadCPU: 1}
	var ps []peer
	for _, p := range peers() {
		if p.name == peerSidekey || p.name == peerNginx || p.name == peerFasthttp {
			ps = append(ps, p)
		}
	}
	layouts := []*layout{{name: layoutCapped, quota: &burner{cpu: 0, pct: 50}}, {name: layoutUncapped}}
	var rs []result
	for _, l := range o.layouts {
		for _, c := range o.conns {
			for rep := 0; rep < 2; rep++ {
				rs = append(rs,
					result{Peer: peerNginx, Layout: l, Conns: c, Repeat: rep, ReqPerSec: 40000 + float64(rep)*2000, CPUPerReqUS: 10, PeakRSSMiB: 16, AnonRSSMiB: 9},
					result{Peer: peerSidekey, Layout: l, Conns: c, Repeat: rep, ReqPerSec: 20000 + float64(rep)*1000, CPUPerReqUS: 20, PeakRSSMiB: 22,
						AnonRSSMiB: 8 + float64(rep), AuditLines: 10, AuditExpected: 10},
					result{Peer: peerFasthttp, Layout: l, Conns: c, Repeat: rep, ReqPerSec: 25000 + float64(rep)*1000, CPUPerReqUS: 15})
			}
		}
	}
	rs[1].Problems = []string{"3 upstream 401s"}
	rs = append(rs, result{Peer: peerSidekey, Layout: layoutUncapped, Conns: 32, Repeat: 2, Err: errors.New("did not start")})
	env := environment{Date: "2025-01-01 00:00 UTC", Kernel: "6.1.0", CPUModel: "Test CPU", Cores: 2, GoVersion: "go1.26.8",
		Versions: map[string]string{"nginx": "1.22.1"}}
	rep := buildReport(env, o, layouts, ps, map[string]string{peerCaddy: "caddy is not installed"}, rs)
	md := rep.markdown()
	for _, want := range []string{
		"| nginx 1.22.1, 1 worker, upstream keepalive | 41,000 | 10.0 | 41,000 / 41,000 | 16.0 | 9.0 |",
		"| 22.0 | 9.0 |", // sidekey's anonymous memory: the higher of its runs
		"| sidekey (audit line and metrics on) | 20,500 (FAILED) |",
		"| sidekey (audit line and metrics on) | 20,500 (20,000–21,000) | 0.50× |",
		"1 FAILED of 2",
		// sidekey beside the bare proxy, repeat by repeat: 20,000/25,000 and 21,000/26,000
		"| capped | 256 | 25,500 (25,000–26,000) | 20,500 (20,000–21,000) | 0.80× (0.80×–0.81×) | 0.80× | 15.0 / 20.0 |",
		"3 upstream 401s",
		"did not start",
		"caddy was not measured: caddy is not installed.",
		"Linux 6.1.0", "Test CPU", "go1.26.8", "bench/run.sh",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if rep.failures() != 2 {
		t.Errorf("failures = %d, want 2", rep.failures())
	}
}

// TestGRPCCell: the gRPC rows run in one cell only, capped at 32
// connections when those are chosen; the HTTP rows run everywhere.
func TestGRPCCell(t *testing.T) {
	grpcPeer, httpPeer := peer{name: peerGRPCSidekey, grpc: true}, peer{name: peerSidekey}
	for _, tc := range []struct {
		layouts []string
		conns   []int
		layout  string
		n       int
	}{
		{[]string{layoutCapped, layoutUncapped}, []int{1, 32, 256}, layoutCapped, 32},
		{[]string{layoutUncapped}, []int{1, 32, 256}, layoutUncapped, 32},
		{[]string{layoutCapped}, []int{256, 64}, layoutCapped, 256},
	} {
		o := options{layouts: tc.layouts, conns: tc.conns}
		if l, n := o.grpcCell(); l != tc.layout || n != tc.n {
			t.Errorf("grpcCell(%v, %v) = %s, %d; want %s, %d", tc.layouts, tc.conns, l, n, tc.layout, tc.n)
		}
		runs := 0
		for _, l := range tc.layouts {
			for _, c := range tc.conns {
				if o.runs(grpcPeer, l, c) {
					runs++
				}
				if !o.runs(httpPeer, l, c) {
					t.Errorf("an HTTP peer does not run in %s at %d", l, c)
				}
			}
		}
		if runs != 1 {
			t.Errorf("the gRPC peer runs in %d cells of %v × %v, want 1", runs, tc.layouts, tc.conns)
		}
	}
}

func TestReportGRPC(t *testing.T) {
	o := options{duration: 10 * time.Second, warmup: 2 * time.Second, repeats: 2, conns: []int{1, 32},
		layouts: []string{layoutCapped, layoutUncapped}, quota: 50, body: 64, rotateEvery: 10 * time.Millisecond,
		command: "bench/run.sh", loadCPU: 1}
	var ps []peer
	for _, p := range peers() {
		if p.name == peerSidekey || p.grpc {
			ps = append(ps, p)
		}
	}
	layouts := []*layout{{name: layoutCapped, quota: &burner{cpu: 0, pct: 50}}, {name: layoutUncapped}}
	var rs []result
	for rep := range 2 {
		rs = append(rs,
			result{Peer: peerSidekey, Layout: layoutCapped, Conns: 32, Repeat: rep, ReqPerSec: 20000, CPUPerReqUS: 25},
			result{Peer: peerGRPCSidekey, Layout: layoutCapped, Conns: 32, Repeat: rep, ReqPerSec: 9000 + float64(rep)*2000, CPUPerReqUS: 50, PeakRSSMiB: 30},
			result{Peer: peerGRPCNginx, Layout: layoutCapped, Conns: 32, Repeat: rep, ReqPerSec: 12500, CPUPerReqUS: 40, PeakRSSMiB: 12},
			result{Peer: peerGRPCDirect, Layout: layoutCapped, Conns: 32, Repeat: rep, ReqPerSec: 25000})
	}
	md := buildReport(environment{Versions: map[string]string{"nginx": "1.22.1"}}, o, layouts, ps, nil, rs).markdown()
	for _, want := range []string{
		"## gRPC, capped, 32 callers",
		"| sidekey, h2c route (audit line and metrics on) | 10,000 (9,000–11,000) | 0.40× | 0.80× |",
		"| 50.0 |",
		"| nginx 1.22.1 grpc_pass, 1 worker, upstream keepalive | 12,500 | 0.50× | 1.00× |",
		"| direct: client to upstream, no proxy | 25,000 | 1.00× | 2.00× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// The gRPC rows are not in the HTTP tables.
	if strings.Contains(md[:strings.Index(md, "## gRPC")], "grpc_pass") {
		t.Errorf("a gRPC row is in an HTTP table:\n%s", md)
	}
}

func TestParseSchedstat(t *testing.T) {
	ns, err := parseSchedstat([]byte("123456789 4567 89\n"))
	if err != nil || ns != 123456789 {
		t.Fatalf("parseSchedstat = %d, %v", ns, err)
	}
	if _, err := parseSchedstat([]byte("")); err == nil {
		t.Fatal("an empty schedstat parsed")
	}
}

// alternating builds windows of one second from (rotating, requests, CPU
// µs per request) triples.
func alternating(ws ...[3]float64) []window {
	var out []window
	for _, w := range ws {
		out = append(out, window{Rotating: w[0] == 1, Seconds: 1, Requests: uint64(w[1]),
			CPUNanos: uint64(w[1] * w[2] * 1e3), Rotations: uint64(w[0] * 80)})
	}
	return out
}

func TestNeighbourRatios(t *testing.T) {
	ws := alternating(
		[3]float64{0, 1000, 30},
		[3]float64{1, 990, 31}, // against 1000 and 1200: 990/1100, 31/30
		[3]float64{0, 1200, 30},
		[3]float64{1, 1200, 30}, // against 1200 and 1000: 1200/1100
		[3]float64{0, 1000, 30},
		[3]float64{1, 500, 60}, // no static window after it: left out
	)
	rates, cpus := neighbourRatios(ws)
	want := []float64{990.0 / 1100, 1200.0 / 1100}
	if len(rates) != 2 || len(cpus) != 2 {
		t.Fatalf("ratios = %v, %v; want two each", rates, cpus)
	}
	for i := range want {
		if math.Abs(rates[i]-want[i]) > 1e-9 {
			t.Errorf("rate ratio %d = %v, want %v", i, rates[i], want[i])
		}
	}
	if math.Abs(cpus[0]-31.0/30) > 1e-9 || math.Abs(cpus[1]-1) > 1e-9 {
		t.Errorf("CPU ratios = %v, want [%v 1]", cpus, 31.0/30)
	}
}

// TestCheckWindows: an alternating run counts only if sidekey took new
// credentials in its rotating windows and (bar one at the switch) not in
// its static ones.
func TestCheckWindows(t *testing.T) {
	clean := wrkResult{Requests: 1000, DurationUS: 1e6}
	for _, tc := range []struct {
		name string
		ws   []window
		want string
	}{
		{"taken while rotating", []window{{Rotations: 1}, {Rotating: true, Rotations: 60}, {}}, ""},
		{"none while rotating", []window{{}, {Rotating: true}, {}}, "window 2 took no new credential while rotating"},
		{"taken while static", []window{{Rotations: 5}, {Rotating: true, Rotations: 60}, {}}, "window 1 took 5 new credentials while static"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := result{Windows: tc.ws}
			r.check(clean, upStats{OK: 1000}, 32)
			got := strings.Join(r.Problems, "; ")
			if got != tc.want {
				t.Fatalf("problems = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReportAlternation(t *testing.T) {
	o := options{duration: 10 * time.Second, warmup: 2 * time.Second, repeats: 2, conns: []int{32},
		layouts: []string{layoutCapped}, quota: 50, body: 64, rotateEvery: 10 * time.Millisecond, window: time.Second,
		command: "bench/run.sh", loadCPU: 1}
	var ps []peer
	for _, p := range peers() {
		if p.name == peerSidekey || p.name == peerSidekeyAlt {
			ps = append(ps, p)
		}
	}
	layouts := []*layout{{name: layoutCapped, quota: &burner{cpu: 0, pct: 50}}}
	rs := []result{
		{Peer: peerSidekey, Layout: layoutCapped, Conns: 32, ReqPerSec: 20000, CPUPerReqUS: 25},
		{Peer: peerSidekeyAlt, Layout: layoutCapped, Conns: 32, ReqPerSec: 19000, CPUPerReqUS: 26, Windows: alternating(
			[3]float64{0, 1000, 30}, [3]float64{1, 990, 31}, [3]float64{0, 1000, 30})},
		{Peer: peerSidekeyAlt, Layout: layoutCapped, Conns: 32, Repeat: 1, ReqPerSec: 19000, CPUPerReqUS: 26, Windows: alternating(
			[3]float64{0, 1000, 30}, [3]float64{1, 970, 30}, [3]float64{0, 1000, 30})},
	}
	md := buildReport(environment{Versions: map[string]string{}}, o, layouts, ps, nil, rs).markdown()
	// Both windows' ratios: 0.99 and 0.97 (median 0.98); CPU 31/30 and 1.
	want := "| capped | 32 | 2 | 1,000 / 980 | 0.980× (0.970×–0.990×) | 1.017× (1.000×–1.033×) | 80 / 0 |"
	if !strings.Contains(md, want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
	// The alternating run has its own table, not a row in the main ones.
	if strings.Contains(md, "| sidekey, rotating in every other window |") {
		t.Errorf("the alternating run has a row in a main table:\n%s", md)
	}
}
