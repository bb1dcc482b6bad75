package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// The gRPC rows: unary TestService calls from cmd/grpcload through each
// proxy (sidekey with an h2c route, nginx with grpc_pass) and directly,
// to cmd/grpcupstream, which checks the bearer token as cmd/upstream does.
// A run is measured and checked like an HTTP one; grpcload's summary has
// wrk's shape.

// grpcConns is how many HTTP/2 connections grpcload's callers share: a
// gRPC client multiplexes its calls over few connections.
const grpcConns = 4

// measureGRPC is measure for a gRPC row: a fresh gRPC upstream and proxy
// (none for the direct row), a probe, the warm-up and the measured run.
func (b *bench) measureGRPC(ctx context.Context, p peer, l *layout, callers int, dir string, r *result) error {
	s, err := b.site(p, dir)
	if err != nil {
		return err
	}
	up, err := b.startGRPCUpstream(ctx, s)
	if err != nil {
		return err
	}
	defer up.stop(5 * time.Second)
	target, auth, watch := s.listen, appAuthorization, up
	var px *child
	if p.name == peerGRPCDirect {
		target, auth = s.upstream, "Bearer "+s.token
	} else {
		argv, env, err := p.setup(s)
		if err != nil {
			return err
		}
		if err := l.quotaBegin(); err != nil {
			return err
		}
		defer l.quotaEnd()
		if px, err = startChild(p.name, dir, l.wrap(argv), env); err != nil {
			return err
		}
		defer px.stop(10 * time.Second)
		watch = px
	}
	if err := waitFor(ctx, watch, func() bool { return b.grpcProbe(ctx, target, auth) }); err != nil {
		return fmt.Errorf("%s did not get ready: %w", p.name, err)
	}
	if b.o.warmup > 0 {
		if _, err := b.grpcRun(ctx, callers, b.o.warmup, target, auth); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	before, err := b.snapshot(px, s, l)
	if err != nil {
		return err
	}
	w, err := b.grpcRun(ctx, callers, b.o.duration, target, auth)
	if err != nil {
		return err
	}
	after, err := b.snapshot(px, s, l)
	if err != nil {
		return err
	}
	if px != nil {
		px.stop(10 * time.Second)
	}
	b.fill(r, w, before, after)
	if px != nil && isSidekey(p.name) {
		total, _ := upstreamStats(s.stats)
		r.AuditExpected = total.OK + total.Unauthorized + total.BadBody
		r.AuditLines = countAuditLines(px.errLog)
	}
	r.check(w, after.up.sub(before.up), callers)
	return nil
}

// startGRPCUpstream runs the gRPC upstream on the load core and waits for
// its stats.
func (b *bench) startGRPCUpstream(ctx context.Context, s *site) (*child, error) {
	argv := []string{"taskset", "-c", strconv.Itoa(b.o.loadCPU), b.bins["grpcupstream"],
		"-listen", s.upstream, "-stats", s.stats, "-token", s.token, "-request-body", strconv.Itoa(b.o.body)}
	up, err := startChild("grpcupstream", s.dir, argv, nil)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, up, func() bool { _, err := upstreamStats(s.stats); return err == nil }); err != nil {
		up.stop(time.Second)
		return nil, fmt.Errorf("gRPC upstream did not get ready: %w", err)
	}
	return up, nil
}

// grpcProbe makes one call through target and reports whether it succeeded.
func (b *bench) grpcProbe(ctx context.Context, target, auth string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, b.bins["grpcload"], "-addr", target, "-probe", "-authorization", auth,
		"-body", strconv.Itoa(b.o.body)).Run() == nil
}

// grpcRun drives target with callers concurrent callers for d, pinned to
// the load core, as wrkRun drives an HTTP proxy. It is bounded: grpcload
// is killed if it outlives d by half a minute.
func (b *bench) grpcRun(ctx context.Context, callers int, d time.Duration, target, auth string) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", "-c", strconv.Itoa(b.o.loadCPU), b.bins["grpcload"],
		"-addr", target, "-callers", strconv.Itoa(callers), "-conns", strconv.Itoa(grpcConns),
		"-duration", d.String(), "-authorization", auth, "-body", strconv.Itoa(b.o.body))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("grpcload: %v: %s", err, firstLine(string(out)))
	}
	return parseWrk(out)
}
