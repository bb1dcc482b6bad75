package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bench is a prepared harness: binaries built, peers found, layouts set.
type bench struct {
	o       options
	log     io.Writer
	work    string // work directory: bin/, the Lua script, one dir per run
	bins    map[string]string
	peers   []peer
	skipped map[string]string // peer -> why it does not run
	layouts []*layout
	env     environment
	token   string
	script  string
	hz      uint64
}

// setup pins the harness to the load core, builds what it needs, finds
// the peers and the quota method.
func setup(ctx context.Context, o options, log io.Writer) (*bench, error) {
	if err := lockMachine(log); err != nil {
		return nil, err
	}
	if err := pinSelf(o.loadCPU); err != nil {
		return nil, err
	}
	for _, tool := range []string{"taskset", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is required: %w", tool, err)
		}
	}
	b := &bench{o: o, log: log, bins: map[string]string{}, skipped: map[string]string{}, hz: clockTicks()}
	var err error
	if b.work, err = workDir(o.workdir); err != nil {
		return nil, err
	}
	if err := b.build(ctx); err != nil {
		b.close()
		return nil, err
	}
	b.findPeers()
	if err := b.makeLayouts(ctx); err != nil {
		b.close()
		return nil, err
	}
	b.token = randomToken()
	b.script = filepath.Join(b.work, "request.lua")
	if err := os.WriteFile(b.script, []byte(wrkScript(o.body)), 0o644); err != nil {
		b.close()
		return nil, err
	}
	b.env = describeEnvironment(ctx, b)
	return b, nil
}

// lockMachine takes a machine-wide lock, waiting while another peerbench
// holds it: two harnesses on the same cores would measure each other. The
// lock lasts as long as the process.
func lockMachine(log io.Writer) error {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "peerbench.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return fmt.Errorf("machine lock: %w", err)
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		return nil
	}
	fmt.Fprintln(log, "peerbench: waiting for another peerbench run on this machine to finish")
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("machine lock: %w", err)
	}
	return nil
}

// pinSelf moves every thread of the harness to cpu; the processes it
// starts inherit that unless pinned elsewhere.
func pinSelf(cpu int) error {
	out, err := exec.Command("taskset", "-a", "-c", "-p", strconv.Itoa(cpu), strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pinning to core %d: %v: %s", cpu, err, firstLine(string(out)))
	}
	return nil
}

func workDir(dir string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "peerbench-")
	}
	return dir, os.MkdirAll(dir, 0o755)
}

func randomToken() string {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	return "bench-" + hex.EncodeToString(raw[:])
}

// build compiles the upstream, the helper proxies and (unless given)
// sidekey, the same static way as the release build.
func (b *bench) build(ctx context.Context) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	bin := filepath.Join(b.work, "bin")
	pkgs := map[string]string{"upstream": "./bench/cmd/upstream", "fastproxy": "./bench/cmd/fastproxy", "stdproxy": "./bench/cmd/stdproxy",
		"fwdload": "./bench/cmd/fwdload", "grpcupstream": "./bench/cmd/grpcupstream", "grpcload": "./bench/cmd/grpcload"}
	if b.o.sidekey == "" {
		pkgs["sidekey"] = "./cmd/sidekey"
	} else {
		abs, err := filepath.Abs(b.o.sidekey)
		if err != nil {
			return err
		}
		b.bins["sidekey"] = abs
	}
	if b.o.sidekeyBase != "" {
		abs, err := filepath.Abs(b.o.sidekeyBase)
		if err != nil {
			return err
		}
		b.bins["sidekey-base"] = abs
	}
	for name, pkg := range pkgs {
		out := filepath.Join(bin, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "grpcnotrace", "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", pkg, err, msg)
		}
		b.bins[name] = out
	}
	fmt.Fprintf(b.log, "peerbench: built %s\n", strings.Join(sortedKeys(b.bins), ", "))
	return nil
}

// moduleRoot is the directory of the sidekey module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run peerbench from inside the sidekey module")
	}
	return filepath.Dir(mod), nil
}

// findPeers keeps the selected peers whose tools are installed.
func (b *bench) findPeers() {
	for _, p := range peers() {
		if !contains(b.o.peers, p.name) || p.name == peerSidekeyBase && b.o.sidekeyBase == "" {
			continue
		}
		if p.tool != "" {
			path, err := lookTool(p.tool)
			if err != nil {
				b.skipped[p.name] = p.tool + " is not installed"
				fmt.Fprintf(b.log, "peerbench: skipping %s: %s is not installed\n", p.name, p.tool)
				continue
			}
			b.bins[p.tool] = path
		}
		b.peers = append(b.peers, p)
	}
}

// lookTool finds an executable on PATH or in the sbin directories, where
// Debian puts nginx and haproxy.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func (b *bench) makeLayouts(ctx context.Context) error {
	for _, name := range b.o.layouts {
		l := &layout{name: name, cpu: b.o.proxyCPU}
		if name == layoutCapped {
			q, err := newQuota(ctx, b.o.quotaMethod, b.o.quota, b.o.proxyCPU)
			if err != nil {
				return fmt.Errorf("no way to cap the proxy's CPU: %w", err)
			}
			l.quota = q
			fmt.Fprintf(b.log, "peerbench: CPU quota: %s\n", q.describe())
		}
		b.layouts = append(b.layouts, l)
	}
	return nil
}

func (b *bench) close() {
	for _, l := range b.layouts {
		if l.quota != nil {
			l.quota.close()
		}
	}
	if b.o.workdir == "" && !b.o.keep && b.work != "" {
		_ = os.RemoveAll(b.work)
	}
}

// runAll runs every repeat × layout × connection count × peer. Peers
// run in an order rotated by one place each repeat; sidekey with a static
// and with a rotating credential always run back to back (see order).
func (b *bench) runAll(ctx context.Context) []result {
	var results []result
	total := 0
	for _, l := range b.layouts {
		for _, conns := range b.o.conns {
			for _, p := range b.peers {
				if b.o.runs(p, l.name, conns) {
					total += b.o.repeats
				}
			}
		}
	}
	n := 0
	for rep := 0; rep < b.o.repeats; rep++ {
		for _, l := range b.layouts {
			for _, conns := range b.o.conns {
				for _, p := range order(b.peers, rep) {
					if ctx.Err() != nil {
						return results
					}
					if !b.o.runs(p, l.name, conns) {
						continue
					}
					n++
					r := b.runQuiet(ctx, p, l, conns, rep, fmt.Sprintf("[%d/%d]", n, total))
					results = append(results, r)
					fmt.Fprintf(b.log, "[%d/%d] %s\n", n, total, r.summary())
				}
			}
		}
	}
	return results
}

// runs reports whether peer p runs in layout at conns connections: an
// HTTP peer in every one, a gRPC peer in grpcCell's only.
func (o options) runs(p peer, layout string, conns int) bool {
	if !p.grpc {
		return true
	}
	gl, gc := o.grpcCell()
	return layout == gl && conns == gc
}

// grpcCell is where the gRPC rows run: the capped layout (the first one
// chosen when it is not), and 32 connections, which are callers for
// grpcload (the first count chosen when 32 is not). One cell keeps them to
// a few minutes of the whole run.
func (o options) grpcCell() (string, int) {
	layout := o.layouts[0]
	if contains(o.layouts, layoutCapped) {
		layout = layoutCapped
	}
	conns := o.conns[0]
	if slices.Contains(o.conns, 32) {
		conns = 32
	}
	return layout, conns
}

// runQuiet makes a run when the proxy's core is quiet, and makes it again
// (up to -retries times) when other processes took more than -max-other
// percent of that core during it. The last attempt stands, marked when it
// was disturbed too.
func (b *bench) runQuiet(ctx context.Context, p peer, l *layout, conns, rep int, tag string) result {
	for attempt := 0; ; attempt++ {
		b.waitQuiet(ctx, l.cpu)
		r := b.runOne(ctx, p, l, conns, rep)
		r.Attempts = attempt + 1
		if b.o.maxOther <= 0 || r.Err != nil || r.OtherPct <= b.o.maxOther || attempt >= b.o.retries || ctx.Err() != nil {
			r.Disturbed = b.o.maxOther > 0 && r.Err == nil && r.OtherPct > b.o.maxOther
			return r
		}
		fmt.Fprintf(b.log, "%s %s  (other processes took %.0f%% of core %d: again)\n", tag, r.summary(), r.OtherPct, l.cpu)
	}
}

// waitQuiet waits, up to a minute, for a second in which other processes
// use at most -max-other percent of core cpu.
func (b *bench) waitQuiet(ctx context.Context, cpu int) {
	if b.o.maxOther <= 0 {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		before, err := coreTimes(cpu)
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		after, err := coreTimes(cpu)
		if err != nil || pct(after.busy-before.busy, after.total-before.total) <= b.o.maxOther {
			return
		}
	}
}

// order is the peers' order for one repeat: rotated by rep places, with
// the bare fasthttp proxy, the static sidekey and the rotating sidekey kept
// adjacent as one unit, in that order on even repeats and reversed on odd
// ones, so that the static sidekey always runs next to both. sidekey's two
// key figures are ratios against those two: measured seconds apart, a pair
// shares the machine's state far more than runs a whole round apart, and
// the alternation cancels any bias of going first.
func order(peers []peer, rep int) []peer {
	// Each group runs as one unit, ranked within; the app listener and the
	// forward proxy measured by the harness's load client are the second.
	type place struct{ group, rank int }
	rank := map[string]place{peerFasthttp: {1, 1}, peerSidekey: {1, 2}, peerSidekeyRotate: {1, 3},
		peerSidekeyGo: {2, 1}, peerSidekeyFwd: {2, 2}}
	var units [][]peer
	unitOf := map[int]int{} // group -> index in units
	for _, p := range peers {
		if g := rank[p.name].group; g > 0 {
			if i, ok := unitOf[g]; ok {
				units[i] = append(units[i], p)
				continue
			}
			unitOf[g] = len(units)
		}
		units = append(units, []peer{p})
	}
	for _, i := range unitOf {
		u := units[i]
		slices.SortStableFunc(u, func(a, b peer) int { return rank[a.name].rank - rank[b.name].rank })
		if rep%2 == 1 {
			slices.Reverse(u)
		}
	}
	var out []peer
	for _, u := range rotate(units, rep) {
		out = append(out, u...)
	}
	return out
}

func rotate[T any](s []T, by int) []T {
	if len(s) == 0 {
		return s
	}
	by %= len(s)
	return append(append([]T{}, s[by:]...), s[:by]...)
}

// runOne starts a fresh upstream and proxy, warms up, measures, checks
// and stops both.
func (b *bench) runOne(ctx context.Context, p peer, l *layout, conns, rep int) result {
	r := result{Peer: p.name, Layout: l.name, Conns: conns, Repeat: rep}
	dir, err := os.MkdirTemp(b.work, fmt.Sprintf("%s-%s-%d-", p.name, l.name, conns))
	if err != nil {
		r.Err = err
		return r
	}
	if !b.o.keep {
		defer os.RemoveAll(dir)
	}
	if err := b.measure(ctx, p, l, conns, dir, &r); err != nil {
		r.Err = err
	}
	return r
}

func (b *bench) measure(ctx context.Context, p peer, l *layout, conns int, dir string, r *result) error {
	if p.grpc {
		return b.measureGRPC(ctx, p, l, conns, dir, r)
	}
	s, err := b.site(p, dir)
	if err != nil {
		return err
	}
	up, err := b.startUpstream(ctx, p, s)
	if err != nil {
		return err
	}
	defer up.stop(5 * time.Second)
	argv, env, err := p.setup(s)
	if err != nil {
		return err
	}
	if err := l.quotaBegin(); err != nil {
		return err
	}
	defer l.quotaEnd()
	px, err := startChild(p.name, dir, l.wrap(argv), env)
	if err != nil {
		return err
	}
	defer px.stop(10 * time.Second)
	url := "http://" + s.listen + requestPath
	if err := waitFor(ctx, px, func() bool { return b.probe(url, s.host) }); err != nil {
		return fmt.Errorf("%s did not get ready: %w", p.name, err)
	}
	load := func(d time.Duration) (wrkResult, error) {
		if p.goload {
			return goloadRun(ctx, b.o.loadCPU, conns, d, b.goloadArgs(p, s))
		}
		return wrkRun(ctx, b.o.loadCPU, conns, d, b.script, url)
	}
	if b.o.warmup > 0 {
		if _, err := load(b.o.warmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	before, err := b.snapshot(px, s, l)
	if err != nil {
		return err
	}
	var w wrkResult
	if p.alternate {
		w, r.Windows, err = b.alternate(ctx, px, s, l, conns, url)
	} else {
		w, err = load(b.o.duration)
	}
	if err != nil {
		return err
	}
	after, err := b.snapshot(px, s, l)
	if err != nil {
		return err
	}
	px.stop(10 * time.Second)
	b.fill(r, w, before, after)
	if isSidekey(p.name) {
		total, _ := upstreamStats(s.stats)
		r.AuditExpected = total.OK + total.Unauthorized + total.BadBody
		r.AuditLines = countAuditLines(px.errLog)
	}
	r.check(w, after.up.sub(before.up), conns)
	return nil
}

// alternate drives the proxy for -duration like wrkRun, cut into an odd
// number of windows of -window: the upstream issues its tokens into the
// credential file in every other window and into a file nothing watches
// in the rest, the first and the last included. Rotating and static
// windows then share one process, its connections and the machine's state
// of the moment, and differ only in the proxy's taking of new credentials;
// the upstream's own work is the same in both. Each window is the
// difference of the snapshots at its ends.
func (b *bench) alternate(ctx context.Context, px *child, s *site, l *layout, conns int, url string) (wrkResult, []window, error) {
	n := int(b.o.duration / b.o.window)
	if n%2 == 0 {
		n--
	}
	type ran struct {
		w   wrkResult
		err error
	}
	done := make(chan ran, 1)
	go func() {
		w, err := wrkRun(ctx, b.o.loadCPU, conns, b.o.duration, b.script, url)
		done <- ran{w, err}
	}()
	wrkErr := func(err error) (wrkResult, []window, error) {
		<-done
		return wrkResult{}, nil, err
	}
	// Centred in wrk's run: clear of its start and of its end.
	start := time.Now().Add((b.o.duration - time.Duration(n)*b.o.window) / 2)
	if err := sleepUntil(ctx, start); err != nil {
		return wrkErr(err)
	}
	prev, err := b.snapshot(px, s, l)
	if err != nil {
		return wrkErr(err)
	}
	wins := make([]window, 0, n)
	for i := range n {
		rotating := i%2 == 1
		if err := issueTo(s.upstream, rotating); err != nil {
			return wrkErr(err)
		}
		if err := sleepUntil(ctx, start.Add(time.Duration(i+1)*b.o.window)); err != nil {
			return wrkErr(err)
		}
		cur, err := b.snapshot(px, s, l)
		if err != nil {
			return wrkErr(err)
		}
		wins = append(wins, window{Rotating: rotating, Seconds: cur.at.Sub(prev.at).Seconds(),
			Requests: cur.up.OK - prev.up.OK, CPUNanos: cur.proc.nanos - prev.proc.nanos, Rotations: cur.rotations - prev.rotations})
		prev = cur
	}
	res := <-done
	return res.w, wins, res.err
}

// issueTo points the upstream's issuing at the credential file (rotating)
// or away from it.
func issueTo(upstream string, rotating bool) error {
	file := "idle"
	if rotating {
		file = "rotate"
	}
	resp, err := localClient().Post("http://"+upstream+"/_issue-to?file="+file, "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("upstream: switching issuing to %s: %s", file, resp.Status)
	}
	return nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// site allocates the run's ports and files.
func (b *bench) site(p peer, dir string) (*site, error) {
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	// The credential file gets a directory of its own: sidekey watches the
	// file's directory, and the proxy's log beside it would wake the watch
	// on every line.
	credDir := filepath.Join(dir, "credential")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		return nil, err
	}
	s := &site{dir: dir, listen: ports[0], admin: ports[1], upstream: ports[2], stats: ports[2], token: b.token,
		tokenFile: filepath.Join(credDir, "token"), forward: ports[3]}
	if p.grpc {
		s.stats = ports[4]
	}
	if p.tool != "" {
		s.bin = b.bins[p.tool]
	} else {
		s.bin = b.bins[helperBinary(p.name)]
	}
	if !p.rotate {
		if err := os.WriteFile(s.tokenFile, []byte(b.token+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// startUpstream runs the upstream on the load core and waits for it.
func (b *bench) startUpstream(ctx context.Context, p peer, s *site) (*child, error) {
	argv := []string{"taskset", "-c", strconv.Itoa(b.o.loadCPU), b.bins["upstream"], "-listen", s.upstream}
	if b.o.body > 0 {
		argv = append(argv, "-request-body", strconv.Itoa(b.o.body))
	}
	// The upstream issues a token every rotateEvery in every run, so that
	// the work of issuing (a file written and renamed on the load core) is
	// the same for every proxy: it slows the load core a little, and at 32
	// connections a proxy then waits for work more often, which costs it CPU
	// per request. Only the rotating sidekey reads the issued tokens; the
	// others inject the static one, written where nothing watches them.
	// Without this, the rotating run's figure would count the harness's
	// issuing as the proxy's cost of rotation.
	issued := filepath.Join(s.dir, "issued")
	if p.rotate {
		issued = s.tokenFile
	} else {
		argv = append(argv, "-token", s.token)
	}
	if p.alternate {
		// A static window keeps the token of the rotating one before it.
		argv = append(argv, "-idle-file", filepath.Join(s.dir, "issued"),
			"-valid-for", max(5*time.Second, 3*b.o.window).String())
	}
	argv = append(argv, "-rotate-file", issued, "-rotate-every", b.o.rotateEvery.String())
	up, err := startChild("upstream", s.dir, argv, nil)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, up, func() bool { _, err := upstreamStats(s.stats); return err == nil }); err != nil {
		up.stop(time.Second)
		return nil, fmt.Errorf("upstream did not get ready: %w", err)
	}
	return up, nil
}

// probe sends the benchmark's request once, on a fresh connection, and
// reports whether the upstream accepted it. host, when set, is its Host.
func (b *bench) probe(url, host string) bool {
	method := http.MethodGet
	var body io.Reader
	if b.o.body > 0 {
		method, body = http.MethodPost, strings.NewReader(strings.Repeat("x", b.o.body))
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", appAuthorization)
	if host != "" {
		req.Host = host
	}
	resp, err := localClient().Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitFor polls ready for up to 20 seconds, giving up early if c exits.
func waitFor(ctx context.Context, c *child, ready func() bool) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ready() {
			return nil
		}
		if c.exited() {
			return c.failure()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 20s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePorts finds n loopback ports nobody listens on.
func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var out []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// snapshot is the state read just before and just after a measured run.
type snapshot struct {
	at        time.Time
	proc      usage
	up        upStats
	rotations uint64
	throttled uint64
	proxyCore cpuTimes
	loadCore  cpuTimes
}

func (b *bench) snapshot(px *child, s *site, l *layout) (snapshot, error) {
	var sn snapshot
	var err error
	sn.at = time.Now()
	if px != nil { // nil: no proxy (the direct gRPC row)
		if sn.proc, err = treeUsage(px.pid()); err != nil {
			return sn, err
		}
	}
	if sn.proxyCore, err = coreTimes(l.cpu); err != nil {
		return sn, err
	}
	if sn.loadCore, err = coreTimes(b.o.loadCPU); err != nil {
		return sn, err
	}
	if sn.up, err = upstreamStats(s.stats); err != nil {
		return sn, err
	}
	if l.quota != nil {
		sn.throttled, _ = l.quota.throttled()
	}
	if px != nil && isSidekey(px.name) {
		sn.rotations = sidekeyRotations(s.admin)
	}
	return sn, nil
}

func (l *layout) quotaBegin() error {
	if l.quota == nil {
		return nil
	}
	return l.quota.begin()
}

func (l *layout) quotaEnd() {
	if l.quota != nil {
		l.quota.end()
	}
}

// upStats mirrors the upstream's GET /_stats.
type upStats struct {
	OK           uint64 `json:"ok"`
	Unauthorized uint64 `json:"unauthorized"`
	BadBody      uint64 `json:"bad_body"`
	Issued       uint64 `json:"issued"`
	IssueErrors  uint64 `json:"issue_errors"`
}

func (a upStats) sub(b upStats) upStats {
	return upStats{OK: a.OK - b.OK, Unauthorized: a.Unauthorized - b.Unauthorized, BadBody: a.BadBody - b.BadBody,
		Issued: a.Issued - b.Issued, IssueErrors: a.IssueErrors - b.IssueErrors}
}

func upstreamStats(addr string) (upStats, error) {
	var st upStats
	err := getJSON("http://"+addr+"/_stats", &st)
	return st, err
}

// sidekeyRotations is the rotation count sidekey's admin API reports for
// its credential; 0 when it cannot be read.
func sidekeyRotations(admin string) uint64 {
	var list []struct {
		Rotations uint64 `json:"rotations"`
	}
	if err := getJSON("http://"+admin+"/v1/credentials", &list); err != nil || len(list) == 0 {
		return 0
	}
	return list[0].Rotations
}

// localClient is for the harness's own requests, beside wrk's load: short,
// and each on a connection of its own.
func localClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

func getJSON(url string, v any) error {
	resp, err := localClient().Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// countAuditLines counts sidekey's per-request log lines.
func countAuditLines(path string) uint64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var n uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(`"msg":"request"`)) {
			n++
		}
	}
	return n
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

// goloadArgs is the load client's command line for a run of p on s: the
// forward proxy with a CONNECT per connection, or the app listener, with
// the route host as every request's Host either way.
func (b *bench) goloadArgs(p peer, s *site) []string {
	args := []string{b.bins["fwdload"], "-host", s.host, "-auth", appAuthorization, "-body", strconv.Itoa(b.o.body), "-path", requestPath}
	if p.forward {
		return append(args, "-proxy", s.forward, "-ca", filepath.Join(s.dir, "forward-ca.pem"))
	}
	return append(args, "-target", s.listen)
}
