package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report turns the runs into markdown.
type report struct {
	env     environment
	o       options
	layouts []*layout
	peers   []peer
	skipped map[string]string
	results []result
}

func buildReport(env environment, o options, layouts []*layout, ps []peer, skipped map[string]string, results []result) *report {
	return &report{env: env, o: o, layouts: layouts, peers: ps, skipped: skipped, results: results}
}

func (r *report) failures() int {
	n := 0
	for i := range r.results {
		if r.results[i].failed() {
			n++
		}
	}
	return n
}

// cell is every run of one peer in one layout at one connection count.
type cell []result

func (r *report) cell(layout string, conns int, peer string) cell {
	var c cell
	for _, res := range r.results {
		if res.Layout == layout && res.Conns == conns && res.Peer == peer {
			c = append(c, res)
		}
	}
	return c
}

// measured are the runs that produced numbers (FAILED checks included:
// their numbers are shown, and marked).
func (c cell) measured() []result {
	var out []result
	for _, r := range c {
		if r.Err == nil {
			out = append(out, r)
		}
	}
	return out
}

func (c cell) failed() int {
	n := 0
	for i := range c {
		if c[i].failed() {
			n++
		}
	}
	return n
}

// stat is a median with its range.
type stat struct {
	med, min, max float64
	n             int
}

func (c cell) stat(f func(*result) float64) stat {
	var xs []float64
	for _, r := range c.measured() {
		xs = append(xs, f(&r))
	}
	return statOf(xs)
}

// statOf summarises xs, which it sorts; NaNs and n 0 when empty.
func statOf(xs []float64) stat {
	if len(xs) == 0 {
		return stat{med: math.NaN(), min: math.NaN(), max: math.NaN()}
	}
	slices.Sort(xs)
	return stat{med: median(xs), min: xs[0], max: xs[len(xs)-1], n: len(xs)}
}

// median of sorted xs; the mean of the middle two for an even count.
func median(xs []float64) float64 {
	n := len(xs)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func rate(r *result) float64  { return r.ReqPerSec }
func p50(r *result) float64   { return float64(r.P50US) }
func p99(r *result) float64   { return float64(r.P99US) }
func cpuUS(r *result) float64 { return r.CPUPerReqUS }
func cpuPc(r *result) float64 { return r.CPUPercent }
func rss(r *result) float64   { return r.PeakRSSMiB }
func anon(r *result) float64  { return r.AnonRSSMiB }
func other(r *result) float64 { return r.OtherPct }

func (r *report) label(p peer) string {
	if !strings.Contains(p.label, "%s") {
		return p.label
	}
	if p.rotate {
		return fmt.Sprintf(p.label, r.o.rotateEvery)
	}
	v := r.env.Versions[p.tool]
	return strings.TrimSpace(strings.ReplaceAll(fmt.Sprintf(p.label, v), "  ", " "))
}

func (r *report) markdown() string {
	var sb strings.Builder
	r.header(&sb)
	if len(r.tablePeers()) > 0 {
		r.summary(&sb)
		for _, l := range r.layouts {
			for _, conns := range r.o.conns {
				r.detail(&sb, l, conns)
			}
		}
	}
	r.reference(&sb)
	r.rotation(&sb)
	r.callers(&sb)
	r.base(&sb)
	r.forward(&sb)
	r.alternation(&sb)
	r.grpc(&sb)
	r.checks(&sb)
	r.notes(&sb)
	return sb.String()
}

func (r *report) header(sb *strings.Builder) {
	e := r.env
	fmt.Fprintf(sb, "# sidekey against its peers\n\n")
	fmt.Fprintf(sb, "Measured %s on %s (%d CPUs), Linux %s, %s.", e.Date, e.CPUModel, e.Cores, e.Kernel, e.GoVersion)
	var tools []string
	for _, t := range []struct{ key, name string }{{"nginx", "nginx"}, {"haproxy", "HAProxy"}, {"caddy", "Caddy"}, {"wrk", "wrk"}} {
		if v, ok := e.Versions[t.key]; ok {
			tools = append(tools, t.name+" "+v)
		}
	}
	if len(tools) > 0 {
		fmt.Fprintf(sb, " %s.", strings.Join(tools, ", "))
	}
	if e.Sidekey != "" {
		fmt.Fprintf(sb, " sidekey %s.", e.Sidekey)
	}
	fmt.Fprintf(sb, "\n\n```\n%s\n```\n\n", r.o.command)
	req := fmt.Sprintf("POST requests with a %d-byte body", r.o.body)
	if r.o.body == 0 {
		req = "GET requests"
	}
	fmt.Fprintf(sb, "Every proxy injects the same bearer token into %s, replacing the Authorization "+
		"header the client sends, in front of the same upstream, which checks the token and answers a 64-byte body, "+
		"and issues a new token every %s in every run (read only by the rotating sidekey). "+
		"wrk runs one thread over keep-alive connections. Each run starts a fresh upstream and proxy, "+
		"warms up for %s and measures for %s. Figures are the median of %d runs, interleaved across proxies "+
		"in an order rotated each repeat, with the range in brackets when there is more than one.\n\n",
		req, r.o.rotateEvery, r.o.warmup, r.o.duration, r.o.repeats)
	if r.o.maxOther > 0 {
		fmt.Fprintf(sb, "A run waits for the proxy's core to be quiet, and is made again (up to %d times) "+
			"when other processes took more than %.0f%% of that core during it.\n\n", r.o.retries, r.o.maxOther)
	}
	for _, l := range r.layouts {
		fmt.Fprintf(sb, "- **%s**: %s.\n", l.name, l.title(r.o.loadCPU))
	}
	sb.WriteString("\n")
}

// summary is the table: capped throughput and CPU per request at
// one connection count, uncapped throughput at all, peak RSS.
func (r *report) summary(sb *strings.Builder) {
	capped, uncapped := r.layout(layoutCapped), r.layout(layoutUncapped)
	conns := r.o.conns[0]
	if slices.Contains(r.o.conns, 32) {
		conns = 32
	}
	share := fmt.Sprintf("%d%% of a core", r.o.quota)
	if r.o.quota == 50 {
		share = "½ core"
	}
	var cols []string
	if capped != nil {
		cols = append(cols, fmt.Sprintf("req/s, proxy capped at %s, %d conns", share, conns))
	}
	cols = append(cols, "CPU µs per request")
	if uncapped != nil {
		cols = append(cols, fmt.Sprintf("req/s, proxy alone on 1 core, %s conns", joinInts(r.o.conns, " / ")))
	}
	cols = append(cols, "peak RSS MiB", "of it anonymous MiB")
	sb.WriteString("## Summary\n\n")
	tableHead(sb, append([]string{"proxy"}, cols...))
	cpuLayout := layoutCapped
	if capped == nil {
		cpuLayout = layoutUncapped
	}
	for _, p := range r.tablePeers() {
		row := []string{r.label(p)}
		if capped != nil {
			row = append(row, r.rateText(r.cell(layoutCapped, conns, p.name)))
		}
		row = append(row, oneDecimal(r.cell(cpuLayout, conns, p.name).stat(cpuUS)))
		if uncapped != nil {
			var rates []string
			for _, c := range r.o.conns {
				rates = append(rates, r.rateText(r.cell(layoutUncapped, c, p.name)))
			}
			row = append(row, strings.Join(rates, " / "))
		}
		row = append(row, oneDecimalMax(r.maxRSS(p.name, rss)), oneDecimalMax(r.maxRSS(p.name, anon)))
		tableRow(sb, row)
	}
	sb.WriteString("\n")
}

func (r *report) layout(name string) *layout {
	for _, l := range r.layouts {
		if l.name == name {
			return l
		}
	}
	return nil
}

// rateText is a cell's median req/s, marked when a run failed.
func (r *report) rateText(c cell) string {
	s := c.stat(rate)
	if s.n == 0 {
		return "–"
	}
	out := thousands(s.med)
	if c.failed() > 0 {
		out += " (FAILED)"
	}
	return out
}

// maxRSS is the highest of f over peer's runs, in any layout.
func (r *report) maxRSS(peer string, f func(*result) float64) float64 {
	var m float64
	for _, res := range r.results {
		if res.Peer == peer && res.Err == nil {
			m = max(m, f(&res))
		}
	}
	return m
}

// detail is one layout at one connection count, every figure.
func (r *report) detail(sb *strings.Builder, l *layout, conns int) {
	fmt.Fprintf(sb, "## %s, %d connections\n\n", l.name, conns)
	tableHead(sb, []string{"proxy", "req/s", "vs nginx", "p50 ms", "p99 ms", "CPU µs/req", "proxy CPU %",
		"others on proxy core %", "peak RSS MiB", "anonymous MiB", "runs"})
	base := r.cell(l.name, conns, peerNginx).stat(rate)
	for _, p := range r.tablePeers() {
		c := r.cell(l.name, conns, p.name)
		rs := c.stat(rate)
		ratio := "–"
		if base.n > 0 && rs.n > 0 && base.med > 0 {
			ratio = fmt.Sprintf("%.2f×", rs.med/base.med)
		}
		tableRow(sb, []string{r.label(p), rangeText(rs, thousands), ratio,
			rangeText(c.stat(p50), msText), rangeText(c.stat(p99), msText),
			oneDecimal(c.stat(cpuUS)), noDecimal(c.stat(cpuPc)), noDecimal(c.stat(other)), oneDecimalMax(maxOf(c, rss)),
			oneDecimalMax(maxOf(c, anon)), runsText(c)})
	}
	sb.WriteString("\n")
}

// reference sets sidekey beside the bare fasthttp proxy, the floor of
// what a fasthttp-based proxy can do, as a paired ratio.
func (r *report) reference(sb *strings.Builder) {
	r.paired(sb, pairing{base: peerFasthttp, other: peerSidekey, baseName: "fasthttp", otherName: "sidekey",
		title: "sidekey against the bare fasthttp proxy",
		intro: "The two run back to back in each repeat, in alternating order; the paired ratio is the median, over repeats, " +
			"of sidekey's req/s divided by the bare proxy's within one repeat, with its range. " +
			"The ratio of the two medians is beside it."})
}

// pairing is a table of two proxies run back to back, as a paired ratio
// of other to base, with their CPU per request.
type pairing struct {
	base, other         string // peers
	baseName, otherName string // column names
	title, intro        string
}

func (r *report) paired(sb *strings.Builder, pr pairing) {
	if !r.has(pr.base) || !r.has(pr.other) {
		return
	}
	sb.WriteString("## " + pr.title + "\n\n" + pr.intro + "\n\n")
	tableHead(sb, []string{"layout", "conns", pr.baseName + " req/s", pr.otherName + " req/s", "paired ratio", "ratio of medians",
		"CPU µs/req " + pr.baseName + " / " + pr.otherName})
	for _, l := range r.layouts {
		for _, conns := range r.o.conns {
			base, other := r.cell(l.name, conns, pr.base), r.cell(l.name, conns, pr.other)
			tableRow(sb, append([]string{l.name, strconv.Itoa(conns)}, append(pairCells(base, other),
				oneDecimal(base.stat(cpuUS))+" / "+oneDecimal(other.stat(cpuUS)))...))
		}
	}
	sb.WriteString("\n")
}

// rotation sets sidekey with a rotating credential beside the static one.
func (r *report) rotation(sb *strings.Builder) {
	if !r.has(peerSidekey) || !r.has(peerSidekeyRotate) {
		return
	}
	fmt.Fprintf(sb, "## Credential rotation\n\nsidekey with its file credential rewritten every %s "+
		"(the upstream accepts every token issued in the last 5 s), beside the same sidekey with a static credential. "+
		"The upstream issues a token every %[1]s in every run of every proxy, read only by the rotating sidekey, "+
		"so that the issuing itself is not counted as the cost of rotation. "+
		"The two run back to back in each repeat, in alternating order; the paired ratio is the median, over repeats, "+
		"of rotating req/s divided by static req/s within one repeat, with its range. "+
		"The ratio of the two medians is beside it.\n\n", r.o.rotateEvery)
	tableHead(sb, []string{"layout", "conns", "static req/s", "rotating req/s", "paired ratio", "ratio of medians",
		"p99 ms static / rotating", "new versions taken per second"})
	for _, l := range r.layouts {
		for _, conns := range r.o.conns {
			st, rot := r.cell(l.name, conns, peerSidekey), r.cell(l.name, conns, peerSidekeyRotate)
			perSec := rot.stat(func(x *result) float64 { return float64(x.Rotations) / r.o.duration.Seconds() })
			tableRow(sb, append([]string{l.name, strconv.Itoa(conns)}, append(pairCells(st, rot),
				msText(st.stat(p99).med)+" / "+msText(rot.stat(p99).med), noDecimal(perSec))...))
		}
	}
	sb.WriteString("\n")
}

// base sets this build beside the base build (-sidekey-base): what a
// change to the request path costs.
func (r *report) base(sb *strings.Builder) {
	r.paired(sb, pairing{base: peerSidekeyBase, other: peerSidekey, baseName: "base", otherName: "this build",
		title: "Against the base build",
		intro: "This build of sidekey beside the base build given with -sidekey-base, same configuration. " +
			"The two run back to back in each repeat, in alternating order; the paired ratio is the median, over repeats, " +
			"of this build's req/s divided by the base build's, with its range. The ratio of the two medians is beside it."})
}

// callers sets sidekey with callers beside the same sidekey without.
func (r *report) callers(sb *strings.Builder) {
	r.paired(sb, pairing{base: peerSidekey, other: peerSidekeyCaller, baseName: "without", otherName: "with callers",
		title: "Callers",
		intro: "sidekey with three token callers, the route admitting one, the application naming itself " +
			"with its caller token in the place the route injects (its Authorization header), beside the same sidekey without callers. " +
			"The two run back to back in each repeat, in alternating order; the paired ratio is the median, over repeats, " +
			"of req/s with callers divided by req/s without, with its range. The ratio of the two medians is beside it."})
}

// forward sets sidekey's forward proxy beside its app listener, both
// driven by the harness's own load client, which wrk cannot replace: wrk
// speaks no CONNECT.
func (r *report) forward(sb *strings.Builder) {
	if !r.has(peerSidekeyGo) || !r.has(peerSidekeyFwd) {
		return
	}
	sb.WriteString("## Forward proxy\n\n" +
		"The same route (matched by its host), the same requests and the same upstream, driven by the harness's own load client " +
		"(`cmd/fwdload`, one request at a time per keep-alive connection, pinned to the load core like wrk) in two ways: " +
		"in plain HTTP to the app-facing listener, and through the forward proxy, each connection a CONNECT that sidekey " +
		"intercepts with TLS (one handshake per connection, at its start; the leaf is minted once per run). " +
		"The two run back to back in each repeat, in alternating order; the paired ratio is the median, over repeats, " +
		"of the forward proxy's req/s divided by the app listener's within one repeat, with its range. " +
		"The load client and wrk differ, so compare these figures with each other, not with the tables above.\n\n")
	tableHead(sb, []string{"layout", "conns", "app listener req/s", "forward proxy req/s", "paired ratio", "ratio of medians",
		"CPU µs/req app / forward", "p50 ms app / forward", "p99 ms app / forward"})
	for _, l := range r.layouts {
		for _, conns := range r.o.conns {
			app, fwd := r.cell(l.name, conns, peerSidekeyGo), r.cell(l.name, conns, peerSidekeyFwd)
			tableRow(sb, append([]string{l.name, strconv.Itoa(conns)}, append(pairCells(app, fwd),
				oneDecimal(app.stat(cpuUS))+" / "+oneDecimal(fwd.stat(cpuUS)),
				msText(app.stat(p50).med)+" / "+msText(fwd.stat(p50).med),
				msText(app.stat(p99).med)+" / "+msText(fwd.stat(p99).med))...))
		}
	}
	sb.WriteString("\n")
}

// alternation is the sidekey-alternate runs: rotating windows against the
// static windows beside them, within one run.
func (r *report) alternation(sb *strings.Builder) {
	if !r.has(peerSidekeyAlt) {
		return
	}
	fmt.Fprintf(sb, "## Credential rotation, alternating windows\n\n"+
		"One sidekey per run, its run cut into windows of %s: the upstream issues its token every %s "+
		"into sidekey's credential file in every other window, and into a file nothing watches in the rest, "+
		"so the upstream's work is the same in both and only sidekey's taking of new credentials differs. "+
		"Each rotating window is set against the mean of the static windows on either side of it, "+
		"seconds apart in the same process, which cancels most of what moves between separate runs; "+
		"the ratios are the median over all such windows of all repeats, with their range. "+
		"CPU is the proxy's scheduler time per request.\n\n", r.o.window, r.o.rotateEvery)
	tableHead(sb, []string{"layout", "conns", "rotating windows", "req/s static / rotating",
		"req/s, rotating over static", "CPU µs/req, rotating over static", "new versions taken per second, rotating / static"})
	for _, l := range r.layouts {
		for _, conns := range r.o.conns {
			runs := r.cell(l.name, conns, peerSidekeyAlt).measured()
			if len(runs) == 0 {
				continue
			}
			var rates, cpus []float64
			var static, rotating, staticRot, rotatingRot []float64
			for _, x := range runs {
				rs, cs := neighbourRatios(x.Windows)
				rates, cpus = append(rates, rs...), append(cpus, cs...)
				for _, w := range x.Windows {
					if w.Rotating {
						rotating, rotatingRot = append(rotating, w.rate()), append(rotatingRot, float64(w.Rotations)/w.Seconds)
					} else {
						static, staticRot = append(static, w.rate()), append(staticRot, float64(w.Rotations)/w.Seconds)
					}
				}
			}
			tableRow(sb, []string{l.name, strconv.Itoa(conns), strconv.Itoa(len(rates)),
				thousands(statOf(static).med) + " / " + thousands(statOf(rotating).med),
				rangeText(statOf(rates), ratio3), rangeText(statOf(cpus), ratio3),
				noDecimal(statOf(rotatingRot)) + " / " + noDecimal(statOf(staticRot))})
		}
	}
	sb.WriteString("\n")
}

// tablePeers are the peers of the main tables, which wrk drives; an
// alternating run, the load client's runs and the gRPC rows have tables of
// their own.
func (r *report) tablePeers() []peer {
	var out []peer
	for _, p := range r.peers {
		if !p.alternate && !p.goload && !p.grpc {
			out = append(out, p)
		}
	}
	return out
}

// grpc is the gRPC table: unary calls per second through each proxy and
// directly, in the one layout and connection count they run in, as
// ratios to the direct calls and to nginx.
func (r *report) grpc(sb *strings.Builder) {
	var ps []peer
	for _, p := range r.peers {
		if p.grpc {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return
	}
	layout, callers := r.o.grpcCell()
	fmt.Fprintf(sb, "## gRPC, %s, %d callers\n\n"+
		"Unary calls of grpc-go's interop TestService (a %d-byte payload each way) from %d callers sharing %d HTTP/2 "+
		"connections (cmd/grpcload, h2c, each call with an Authorization of its own that the proxy must replace), "+
		"to a grpc-go upstream (cmd/grpcupstream) that admits a call only with the bearer token. "+
		"sidekey has an h2c route; nginx an http2 listener, grpc_pass to the upstream over kept-alive connections and "+
		"grpc_set_header Authorization; the direct row calls the upstream itself. "+
		"Ratios are of the medians. CPU per call is the proxy's.\n\n",
		layout, callers, r.o.body, callers, grpcConns)
	tableHead(sb, []string{"proxy", "calls/s", "vs direct", "vs nginx", "p50 ms", "p99 ms", "CPU µs/call",
		"proxy CPU %", "others on proxy core %", "peak RSS MiB", "runs"})
	direct := r.cell(layout, callers, peerGRPCDirect).stat(rate)
	nginx := r.cell(layout, callers, peerGRPCNginx).stat(rate)
	ratio := func(a, b stat) string {
		if a.n == 0 || b.n == 0 || b.med <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a.med/b.med)
	}
	for _, p := range ps {
		c := r.cell(layout, callers, p.name)
		rs := c.stat(rate)
		cpu, cpuPct, rssText := oneDecimal(c.stat(cpuUS)), noDecimal(c.stat(cpuPc)), oneDecimalMax(maxOf(c, rss))
		if p.name == peerGRPCDirect {
			cpu, cpuPct, rssText = "–", "–", "–"
		}
		tableRow(sb, []string{r.label(p), rangeText(rs, thousands), ratio(rs, direct), ratio(rs, nginx),
			rangeText(c.stat(p50), msText), rangeText(c.stat(p99), msText), cpu, cpuPct, noDecimal(c.stat(other)),
			rssText, runsText(c)})
	}
	sb.WriteString("\n")
}

func ratio3(x float64) string { return fmt.Sprintf("%.3f×", x) }

// pairCells are the figures of a pair of peers run back to back: each
// one's median req/s, the paired ratio of other to base and the ratio of
// their medians.
func pairCells(base, other cell) []string {
	a, b := base.stat(rate), other.stat(rate)
	ratio := "–"
	if a.n > 0 && b.n > 0 && a.med > 0 {
		ratio = fmt.Sprintf("%.2f×", b.med/a.med)
	}
	return []string{rangeText(a, thousands), rangeText(b, thousands), rangeText(pairedRatio(base, other), times), ratio}
}

// pairedRatio is other's req/s over base's, per repeat in which both were
// measured.
func pairedRatio(base, other cell) stat {
	rates := map[int]float64{}
	for _, x := range base.measured() {
		rates[x.Repeat] = x.ReqPerSec
	}
	var xs []float64
	for _, x := range other.measured() {
		if a, ok := rates[x.Repeat]; ok && a > 0 {
			xs = append(xs, x.ReqPerSec/a)
		}
	}
	return statOf(xs)
}

func times(x float64) string { return fmt.Sprintf("%.2f×", x) }

func (r *report) has(name string) bool {
	return slices.ContainsFunc(r.peers, func(p peer) bool { return p.name == name })
}

// checks lists failed runs and the audit-line count.
func (r *report) checks(sb *strings.Builder) {
	sb.WriteString("## Checks\n\n")
	n := r.failures()
	if n == 0 {
		fmt.Fprintf(sb, "All %d runs passed: no non-2xx response, no socket error, no upstream 401, "+
			"no altered body, and the upstream accepted at least as many requests as wrk counted.\n", len(r.results))
	} else {
		fmt.Fprintf(sb, "%d of %d runs FAILED:\n\n", n, len(r.results))
		for _, res := range r.results {
			if !res.failed() {
				continue
			}
			why := strings.Join(res.Problems, "; ")
			if res.Err != nil {
				why = res.Err.Error()
			}
			fmt.Fprintf(sb, "- %s, %s, %d conns, repeat %d: %s\n", res.Peer, res.Layout, res.Conns, res.Repeat+1, why)
		}
	}
	var disturbed []string
	for _, res := range r.results {
		if res.Disturbed {
			disturbed = append(disturbed, fmt.Sprintf("%s (%s, %d conns, repeat %d: %.0f%%)",
				res.Peer, res.Layout, res.Conns, res.Repeat+1, res.OtherPct))
		}
	}
	if len(disturbed) > 0 {
		fmt.Fprintf(sb, "\n%d runs still shared the proxy's core with other processes beyond %.0f%% after %d retries; "+
			"their figures are in the tables: %s.\n", len(disturbed), r.o.maxOther, r.o.retries, strings.Join(disturbed, ", "))
	}
	var lines, expected uint64
	for _, res := range r.results {
		lines += res.AuditLines
		expected += res.AuditExpected
	}
	if expected > 0 {
		fmt.Fprintf(sb, "\nsidekey wrote %s audit lines for the %s requests its upstreams received (%.2f%%).\n",
			thousands(float64(lines)), thousands(float64(expected)), 100*float64(lines)/float64(expected))
	}
	for _, p := range peerNames() {
		if why, ok := r.skipped[p]; ok {
			fmt.Fprintf(sb, "\n%s was not measured: %s.\n", p, why)
		}
	}
	sb.WriteString("\n")
}

func (r *report) notes(sb *strings.Builder) {
	sb.WriteString(`## How the figures are taken

- req/s, p50 and p99 come from wrk (its done() callback); "non-2xx" is wrk's count of responses with status 400 or more.
- CPU is utime+stime from /proc/PID/stat, summed over the proxy's processes, read just before and just after the measured run; CPU µs per request divides it by the requests wrk completed, and proxy CPU % by the run's length (100 = one full core).
- Peak RSS is VmHWM from /proc/PID/status, summed over the proxy's processes, the highest of the runs. "Anonymous" is RssAnon, read likewise at the end of the measured run: the process's private memory (heap, stacks). The rest of the resident set is file-backed, mostly the proxy's own executable mapped from disk; those pages are page cache, shared by every process that runs the same binary and reclaimable, while anonymous memory is paid by each process.
- nginx runs as a single process (master_process off) with its access log to a file through a 64 KiB buffer, and keepalive_requests raised on both sides so connections are not recycled every 1,000 requests. HAProxy logs nothing; Caddy writes no access log (its default). The bare fasthttp and net/http proxies set the header and nothing else.
- sidekey runs its release build with a file credential, one bearer route, the JSON audit line for every request (stderr to a file) and its Prometheus metrics, which are always on.
`)
}

func tableHead(sb *strings.Builder, cols []string) {
	tableRow(sb, cols)
	seps := make([]string, len(cols))
	for i := range seps {
		seps[i] = "---"
		if i > 0 {
			seps[i] = "---:"
		}
	}
	tableRow(sb, seps)
}

func tableRow(sb *strings.Builder, cells []string) {
	sb.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

// rangeText is "median (min–max)", or just the median for one run.
func rangeText(s stat, f func(float64) string) string {
	if s.n == 0 {
		return "–"
	}
	if s.n == 1 || f(s.min) == f(s.max) {
		return f(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.med), f(s.min), f(s.max))
}

func runsText(c cell) string {
	if len(c) == 0 {
		return "–"
	}
	if f := c.failed(); f > 0 {
		return fmt.Sprintf("%d FAILED of %d", f, len(c))
	}
	return fmt.Sprintf("%d ok", len(c))
}

func maxOf(c cell, f func(*result) float64) float64 {
	var m float64
	for _, r := range c.measured() {
		m = max(m, f(&r))
	}
	return m
}

func oneDecimal(s stat) string {
	if s.n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", s.med)
}

func noDecimal(s stat) string {
	if s.n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", s.med)
}

func oneDecimalMax(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}

// msText renders microseconds as milliseconds.
func msText(us float64) string {
	if math.IsNaN(us) {
		return "–"
	}
	return fmt.Sprintf("%.2f", us/1000)
}

// ms renders microseconds as a duration for progress lines.
func ms(us uint64) string {
	return (time.Duration(us) * time.Microsecond).Round(10 * time.Microsecond).String()
}

// thousands renders a count with thousands separators, rounded.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func joinInts(xs []int, sep string) string {
	var s []string
	for _, x := range xs {
		s = append(s, strconv.Itoa(x))
	}
	return strings.Join(s, sep)
}
