package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// requestPath is the path every request asks for.
const requestPath = "/v1/items"

// appAuthorization is the Authorization header the "application" sends.
// Every proxy must replace it: the upstream answers it with 401, which
// fails the run.
const appAuthorization = "Bearer app-supplied-value-that-must-be-replaced"

// wrkScript is the Lua script of every wrk run: the request, and a done()
// that prints the summary as one JSON line after a marker.
func wrkScript(body int) string {
	req := ""
	if body > 0 {
		req = fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", %d)\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n", body)
	}
	return req + `wrk.headers["Authorization"] = "` + appAuthorization + `"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '` + wrkMarker + `{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`
}

const wrkMarker = "PEERBENCH "

// wrkResult is one wrk run's summary. Latencies are in microseconds.
type wrkResult struct {
	Requests   uint64 `json:"requests"`
	DurationUS uint64 `json:"duration_us"`
	Bytes      uint64 `json:"bytes"`
	Connect    uint64 `json:"connect"`
	Read       uint64 `json:"read"`
	Write      uint64 `json:"write"`
	Status     uint64 `json:"status"` // responses with status >= 400 ("Non-2xx or 3xx")
	Timeout    uint64 `json:"timeout"`
	P50US      uint64 `json:"p50_us"`
	P99US      uint64 `json:"p99_us"`
	MaxUS      uint64 `json:"max_us"`
}

func (w wrkResult) rate() float64 {
	if w.DurationUS == 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

func (w wrkResult) socketErrors() uint64 { return w.Connect + w.Read + w.Write + w.Timeout }

// parseWrk finds the done() line in wrk's output.
func parseWrk(out []byte) (wrkResult, error) {
	for _, line := range bytes.Split(out, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte(wrkMarker)); ok {
			var r wrkResult
			if err := json.Unmarshal(rest, &r); err != nil {
				return r, fmt.Errorf("wrk summary: %w", err)
			}
			return r, nil
		}
	}
	return wrkResult{}, errors.New("wrk printed no summary")
}

// wrkRun drives url with conns connections for d, pinned to cpu. The run
// is bounded: wrk is killed if it outlives d by half a minute.
func wrkRun(ctx context.Context, cpu, conns int, d time.Duration, script, url string) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	secs := strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
	cmd := exec.CommandContext(ctx, "taskset", "-c", strconv.Itoa(cpu),
		"wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+secs, "--timeout", "5s", "--latency", "-s", script, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, firstLine(string(out)))
	}
	return parseWrk(out)
}

// goloadRun drives a sidekey listener with the harness's load client
// (cmd/fwdload) for d, pinned to cpu, as wrkRun drives the others: conns
// keep-alive connections, the same request, the same summary line.
func goloadRun(ctx context.Context, cpu, conns int, d time.Duration, args []string) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	argv := append([]string{"-c", strconv.Itoa(cpu)}, args...)
	argv = append(argv, "-conns", strconv.Itoa(conns), "-duration", d.String())
	out, err := exec.CommandContext(ctx, "taskset", argv...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("fwdload: %v: %s", err, firstLine(string(out)))
	}
	return parseWrk(out)
}
