package main

import (
	"fmt"
	"strings"
)

// result is one measured run of one proxy.
type result struct {
	Peer   string
	Layout string
	Conns  int
	Repeat int
	Err    error // the run could not be made; no numbers

	Requests     uint64
	ReqPerSec    float64
	P50US, P99US uint64
	Non2xx       uint64 // wrk: responses with status >= 400
	SocketErrors uint64 // wrk: connect, read, write and timeout errors
	Up401        uint64 // upstream: requests with a token it did not issue
	UpBadBody    uint64 // upstream: POST bodies that arrived altered
	UpOK         uint64 // upstream: requests it accepted

	CPUSeconds  float64 // the proxy's utime+stime over the measured run
	CPUPerReqUS float64
	CPUPercent  float64 // of one core, over the measured run
	PeakRSSMiB  float64 // VmHWM summed over the proxy's processes
	AnonRSSMiB  float64 // RssAnon at the end of the measured run, summed likewise

	OtherPct float64 // of the proxy's core used by anything but the proxy
	LoadPct  float64 // of the load core used, by anything

	Throttled   uint64 // quota periods with the proxy throttled
	ThrottledOK bool   // Throttled is known
	Rotations   uint64 // sidekey: new credential versions during the run
	Issued      uint64 // upstream: tokens issued during the run

	AuditLines    uint64 // sidekey: audit lines in its log
	AuditExpected uint64 // sidekey: requests the upstream saw over the proxy's life

	Windows []window // sidekey-alternate: the run's windows, in order

	Problems []string // why the run FAILED its checks

	Attempts  int  // runs made for this one (see -max-other)
	Disturbed bool // other processes took more of the proxy's core than -max-other allows
}

func (r *result) failed() bool { return r.Err != nil || len(r.Problems) > 0 }

// window is one window of a sidekey-alternate run.
type window struct {
	Rotating  bool    // the upstream issued into the credential file
	Seconds   float64 // its length as measured
	Requests  uint64  // the upstream accepted
	CPUNanos  uint64  // the proxy's CPU time
	Rotations uint64  // new versions sidekey took
}

func (w window) rate() float64 {
	if w.Seconds <= 0 {
		return 0
	}
	return float64(w.Requests) / w.Seconds
}

func (w window) cpuPerReq() float64 {
	if w.Requests == 0 {
		return 0
	}
	return float64(w.CPUNanos) / 1e3 / float64(w.Requests)
}

// neighbourRatios compares every rotating window that has a static window
// on both sides with the mean of those two: req/s and CPU µs per request,
// rotating over static.
func neighbourRatios(ws []window) (rates, cpus []float64) {
	for i := 1; i+1 < len(ws); i++ {
		w, a, b := ws[i], ws[i-1], ws[i+1]
		if !w.Rotating || a.Rotating || b.Rotating {
			continue
		}
		if base := (a.rate() + b.rate()) / 2; base > 0 {
			rates = append(rates, w.rate()/base)
		}
		if base := (a.cpuPerReq() + b.cpuPerReq()) / 2; base > 0 {
			cpus = append(cpus, w.cpuPerReq()/base)
		}
	}
	return rates, cpus
}

// fill derives the run's figures from wrk and the snapshots around it.
func (b *bench) fill(r *result, w wrkResult, before, after snapshot) {
	r.Requests = w.Requests
	r.ReqPerSec = w.rate()
	r.P50US, r.P99US = w.P50US, w.P99US
	r.Non2xx, r.SocketErrors = w.Status, w.socketErrors()
	up := after.up.sub(before.up)
	r.Up401, r.UpBadBody, r.UpOK, r.Issued = up.Unauthorized, up.BadBody, up.OK, up.Issued
	r.CPUSeconds = float64(after.proc.ticks-before.proc.ticks) / float64(b.hz)
	if w.Requests > 0 {
		r.CPUPerReqUS = r.CPUSeconds * 1e6 / float64(w.Requests)
	}
	if w.DurationUS > 0 {
		r.CPUPercent = 100 * r.CPUSeconds / (float64(w.DurationUS) / 1e6)
	}
	r.PeakRSSMiB = float64(after.proc.hwmKiB) / 1024
	r.AnonRSSMiB = float64(after.proc.anonKiB) / 1024
	r.OtherPct = max(0, pct(after.proxyCore.busy-before.proxyCore.busy-(after.proc.ticks-before.proc.ticks),
		after.proxyCore.total-before.proxyCore.total))
	r.LoadPct = pct(after.loadCore.busy-before.loadCore.busy, after.loadCore.total-before.loadCore.total)
	r.Throttled = after.throttled - before.throttled
	r.ThrottledOK = after.throttled > 0 || before.throttled > 0
	r.Rotations = after.rotations - before.rotations
}

// check marks the run FAILED unless every request succeeded and the
// upstream accepted every token and body it was sent. up is the upstream's
// count over the measured run; it may exceed wrk's by the requests still
// in flight when wrk stopped, never fall short of it.
func (r *result) check(w wrkResult, up upStats, conns int) {
	add := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	if w.Requests == 0 {
		add("no request completed")
	}
	if w.Status > 0 {
		add("%d non-2xx responses", w.Status)
	}
	if n := w.socketErrors(); n > 0 {
		add("%d socket errors (connect %d, read %d, write %d, timeout %d)", n, w.Connect, w.Read, w.Write, w.Timeout)
	}
	if up.Unauthorized > 0 {
		add("%d upstream 401s", up.Unauthorized)
	}
	if up.BadBody > 0 {
		add("%d request bodies altered", up.BadBody)
	}
	if up.OK+uint64(conns) < w.Requests {
		add("upstream accepted %d of %d requests", up.OK, w.Requests)
	}
	if up.IssueErrors > 0 {
		add("%d token file writes failed", up.IssueErrors)
	}
	// An alternating run compares only if sidekey took new credentials in
	// the rotating windows and not in the static ones, bar one in flight
	// at the switch.
	for i, w := range r.Windows {
		if w.Rotating && w.Rotations == 0 {
			add("window %d took no new credential while rotating", i+1)
		}
		if !w.Rotating && w.Rotations > 1 {
			add("window %d took %d new credentials while static", i+1, w.Rotations)
		}
	}
}

// summary is the progress line of one run.
func (r *result) summary() string {
	head := fmt.Sprintf("%-8s c=%-3d %-14s", r.Layout, r.Conns, r.Peer)
	if r.Err != nil {
		return head + " ERROR: " + r.Err.Error()
	}
	s := fmt.Sprintf("%s %9s req/s  p50 %s  p99 %s  %5.1f µs/req  cpu %3.0f%%  rss %5.1f MiB (anon %.1f)",
		head, thousands(r.ReqPerSec), ms(r.P50US), ms(r.P99US), r.CPUPerReqUS, r.CPUPercent, r.PeakRSSMiB, r.AnonRSSMiB)
	s += fmt.Sprintf("  other on proxy core %.0f%%  load core %.0f%%", r.OtherPct, r.LoadPct)
	if r.ThrottledOK {
		s += fmt.Sprintf("  throttled %d", r.Throttled)
	}
	if r.Peer == peerSidekeyRotate || r.Peer == peerSidekeyAlt {
		s += fmt.Sprintf("  rotations %d (issued %d)", r.Rotations, r.Issued)
	}
	if rates, _ := neighbourRatios(r.Windows); len(rates) > 0 {
		s += fmt.Sprintf("  rotating windows over static %.3f×", statOf(rates).med)
	}
	if r.AuditExpected > 0 {
		s += fmt.Sprintf("  audit %d/%d", r.AuditLines, r.AuditExpected)
	}
	if r.Disturbed {
		s += "  DISTURBED"
	}
	if r.failed() {
		return s + "  FAILED: " + strings.Join(r.Problems, "; ")
	}
	return s + "  ok"
}

// pct is 100·part/whole, with unsigned wrap-around (a part larger than
// the whole, from counters read a moment apart) read as negative.
func pct(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(int64(part)) / float64(whole)
}
